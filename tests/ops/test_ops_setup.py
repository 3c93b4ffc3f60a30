"""`callbridge setup` finds or creates the media-stream config, idempotently by name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from callbridge.services.ops.setup import NameMatches, SetupError, find_or_create, sort_item
from callbridge.simulators.infobip import CallScript, InfobipSimulator

KEY = "setup-test-key"


@pytest.fixture
async def sim() -> AsyncIterator[InfobipSimulator]:
    simulator = InfobipSimulator(api_key=KEY)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def test_creates_once_then_finds_by_name(sim: InfobipSimulator) -> None:
    said: list[str] = []
    url = "wss://voice.example.com/media"
    first = await find_or_create(sim.base_url, KEY, "cb", url, 16000, False, False, said.append)
    again = await find_or_create(sim.base_url, KEY, "cb", url, 16000, False, False, said.append)
    assert first and first == again
    assert len(sim.media_stream_configs) == 1
    config = sim.media_stream_configs[first]
    assert (config.url, config.sample_rate) == (url, "16000")
    assert "created" in said[0] and "found" in said[1]


async def test_differing_config_is_reported_and_updated_only_on_request(
        sim: InfobipSimulator) -> None:
    said: list[str] = []
    config_id = await find_or_create(sim.base_url, KEY, "cb", "wss://old/media", 8000,
                                     False, False, said.append)
    assert config_id
    await find_or_create(sim.base_url, KEY, "cb", "wss://new/media", 8000, False, False,
                         said.append)
    assert sim.media_stream_configs[config_id].url == "wss://old/media"
    assert "--update" in said[-1]
    await find_or_create(sim.base_url, KEY, "cb", "wss://new/media", 8000, False, True,
                         said.append)
    assert sim.media_stream_configs[config_id].url == "wss://new/media"


async def test_dry_run_sends_nothing(sim: InfobipSimulator) -> None:
    said: list[str] = []
    assert await find_or_create(sim.base_url, KEY, "cb", "wss://x/media", 24000, True, False,
                                said.append) is None
    assert not sim.requests and len(said) == 2


async def test_wrong_key_says_what_to_check(sim: InfobipSimulator) -> None:
    with pytest.raises(SetupError, match="INFOBIP_API_KEY"):
        await find_or_create(sim.base_url, "wrong", "cb", "wss://x/media", 8000, False, False,
                             print)


# A MEDIA_STREAMING config (the spec's own request example for that type, named as ours):
# how an account that also forks call audio somewhere would hold it.
MEDIA_STREAMING = {"type": "MEDIA_STREAMING", "name": "cb", "url": "wss://fork.example/audio",
                   "securityConfig": {"type": "BASIC", "username": "u", "password": "p"},
                   "audioEncoding": "RAW"}


async def seed(sim: InfobipSimulator, body: dict[str, Any]) -> str:
    """Create a config through the simulator's HTTP API, as the account's owner would."""
    async with aiohttp.ClientSession() as http, http.post(
            sim.base_url + "/calls/1/media-stream-configs", json=body,
            headers={"Authorization": f"App {KEY}"}) as resp:
        assert resp.status == 201, await resp.text()
        created: dict[str, Any] = await resp.json()
    return str(created["id"])


async def test_same_named_media_streaming_config_is_reported_and_ours_created(
        sim: InfobipSimulator) -> None:
    """The old code validated the MEDIA_STREAMING item into our model and crashed."""
    foreign = await seed(sim, MEDIA_STREAMING)
    said: list[str] = []
    url = "wss://voice.example.com/media"
    ours = await find_or_create(sim.base_url, KEY, "cb", url, 24000, False, False,
                                said.append)
    assert ours and ours != foreign
    assert f"{foreign} named 'cb' is of type MEDIA_STREAMING" in said[0]
    assert said[-1].startswith(f"created media-stream config {ours}")
    assert f"{foreign} (MEDIA_STREAMING)" in said[-1]
    # Idempotent: the next run finds ours and still leaves the other one alone.
    said.clear()
    assert await find_or_create(sim.base_url, KEY, "cb", url, 24000, False, False,
                                said.append) == ours
    assert any("MEDIA_STREAMING" in line for line in said) and "found" in said[-1]
    assert {c.id: c.type for c in sim.media_stream_configs.values()} == {
        foreign: "MEDIA_STREAMING", ours: "WEBSOCKET_ENDPOINT"}
    untouched = sim.media_stream_configs[foreign]
    assert (untouched.url, untouched.audio_encoding) == ("wss://fork.example/audio", "RAW")
    assert sim.invalid_requests == [] and sim.spec_violations == []


async def test_foreign_config_listed_first_neither_hides_ours_nor_is_updated(
        sim: InfobipSimulator) -> None:
    foreign = await seed(sim, MEDIA_STREAMING)
    ours = await seed(sim, {"type": "WEBSOCKET_ENDPOINT", "name": "cb",
                            "url": "wss://old/media", "sampleRate": "8000"})
    said: list[str] = []
    assert await find_or_create(sim.base_url, KEY, "cb", "wss://new/media", 8000, False, True,
                                said.append) == ours
    assert sim.media_stream_configs[ours].url == "wss://new/media"
    assert sim.media_stream_configs[foreign].url == "wss://fork.example/audio"
    puts = [r.path for r in sim.requests if r.method == "PUT"]
    assert puts == [f"/calls/1/media-stream-configs/{ours}"]
    assert sim.spec_violations == []


def test_items_our_model_cannot_read_are_reported_not_fatal() -> None:
    found, said = NameMatches(), list[str]()
    sort_item({"id": "a", "type": "WEBSOCKET_ENDPOINT", "name": "cb", "url": "wss://x",
               "sampleRate": "48000"}, "cb", found, said.append)
    sort_item({"id": "b", "type": "SOMETHING_NEW", "name": "cb"}, "cb", found, said.append)
    sort_item("not an object", "cb", found, said.append)
    sort_item({"id": "c", "type": "MEDIA_STREAMING", "name": "other"}, "cb", found,
              said.append)
    assert found.ours == []
    assert [i for i, _ in found.unreadable] == ["a"] and "sampleRate" in said[0]
    assert found.foreign == [("b", "SOMETHING_NEW")]
    assert len(said) == 3


async def test_the_simulator_holds_media_streaming_configs_as_the_spec_answers_them(
        sim: InfobipSimulator) -> None:
    foreign = await seed(sim, MEDIA_STREAMING)
    headers = {"Authorization": f"App {KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{sim.base_url}/calls/1/media-stream-configs/{foreign}") as resp:
            assert await resp.json() == {"id": foreign, "type": "MEDIA_STREAMING",
                                         "name": "cb", "url": "wss://fork.example/audio",
                                         "audioEncoding": "RAW"}  # no password echoed
        # Such a config cannot carry a dialog's media leg.
        call = await sim.place_call(CallScript(caller_wav=None, connect_to_media=False,
                                               hangup_after_s=30))
        body = {"parentCallId": call.call_id, "childCallRequest": {"endpoint": {
            "type": "WEBSOCKET", "websocketEndpointConfigId": foreign}}}
        async with http.post(f"{sim.base_url}/calls/1/dialogs", json=body) as resp:
            assert resp.status == 400
            exc = (await resp.json())["requestError"]["serviceException"]
        assert "MEDIA_STREAMING" in str(exc["validationErrors"])
    assert sim.spec_violations == []

"""`callbridge setup` finds or creates the media-stream config, idempotently by name."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.ops.setup import SetupError, find_or_create
from simulators.infobip import InfobipSimulator

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

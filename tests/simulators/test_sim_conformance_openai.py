"""The Realtime simulator as a witness: client events are judged by the official `openai`
package's types (unknown keys refused), its own server events are held to the same types,
and it behaves as the live service does where the gateway depends on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from callbridge.services.media_gateway.tools import default_registry
from callbridge.shared import realtime_events as rt
from callbridge.shared.profiles import AgentProfile, TurnDetection
from callbridge.simulators.openai_realtime import RealtimeSimulator
from callbridge.simulators.openai_realtime.sdk_validation import (
    SimulatorBug,
    check_server_event,
    validate_client_event,
)
from callbridge.simulators.openai_realtime.validation import DEFAULT_INSTRUCTIONS, DEFAULT_VOICE
from callbridge.simulators.openai_realtime.wire import ClientError

KEY = "sk-conformance"


def _wire(event: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(rt.dumps(event))  # exactly what goes on the socket


@pytest.mark.parametrize("profile", [
    AgentProfile(), AgentProfile(tools=[], transcription_model=None, voice="cedar"),
    AgentProfile(turn_detection=TurnDetection(type="semantic_vad", eagerness="high"))])
def test_every_event_the_gateway_builds_is_a_valid_sdk_client_event(
        profile: AgentProfile) -> None:
    tools = default_registry().schemas(profile.tools)
    events = [
        rt.session_update(rt.session_config(profile, "gpt-realtime", tools)),
        rt.response_create(), rt.response_create("Greet the caller."), rt.response_cancel(),
        rt.item_truncate("item_1", 1200), rt.text_item("user", "pressed 3"),
        rt.text_item("assistant", "Hello"), rt.text_item("system", "note"),
        rt.function_call_output("call_1", "done"), rt.input_audio_append(b"\0\0" * 480)]
    for event in events:
        validate_client_event(_wire(event))


def test_unknown_keys_are_refused_at_any_depth_with_their_path() -> None:
    cases = {
        "session.temperature": {"type": "session.update", "session": {
            "type": "realtime", "temperature": 0.8}},
        "session.audio.output.format.sampleRate": {"type": "session.update", "session": {
            "type": "realtime", "audio": {"output": {"format": {
                "type": "audio/pcm", "sampleRate": 24000}}}}},
        "item.content[0].audio_ms": {"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "x", "audio_ms": 1}]}},
        "response.modalities": {"type": "response.create", "response": {
            "modalities": ["audio"]}},
    }
    for path, event in cases.items():
        with pytest.raises(ClientError) as info:
            validate_client_event(event)
        assert (info.value.code, info.value.param) == ("unknown_parameter", path)


def test_types_are_strict_and_unknown_event_types_refused() -> None:
    with pytest.raises(ClientError) as info:
        validate_client_event({"type": "conversation.item.truncate", "item_id": "i",
                               "content_index": 0, "audio_end_ms": "1200"})
    assert (info.value.code, info.value.param) == ("invalid_type", "audio_end_ms")
    with pytest.raises(ClientError) as info:
        validate_client_event({"type": "response.audio.delta"})  # a beta name
    assert (info.value.code, info.value.param) == ("invalid_value", "type")


def test_the_simulator_raises_on_its_own_invalid_server_events() -> None:
    with pytest.raises(SimulatorBug):
        check_server_event({"type": "response.audio.delta", "event_id": "e"})
    with pytest.raises(SimulatorBug):
        check_server_event({"type": "input_audio_buffer.speech_started", "event_id": "e",
                            "audio_start_ms": 10, "item_id": "i", "confidence": 0.9})
    check_server_event({"type": "input_audio_buffer.speech_started", "event_id": "e",
                        "audio_start_ms": 10, "item_id": "i"})


@pytest.fixture
async def sim() -> AsyncIterator[RealtimeSimulator]:
    async with RealtimeSimulator(api_key=KEY, speed=20.0) as simulator:
        yield simulator


async def _open(sim: RealtimeSimulator) -> ClientConnection:
    ws = await connect(sim.url + "?model=gpt-realtime",
                       additional_headers={"Authorization": f"Bearer {KEY}"})
    created = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert created["type"] == "session.created"
    return ws


async def test_defaults_are_the_live_services(sim: RealtimeSimulator) -> None:
    ws = await _open(sim)
    config = sim.sessions[0].config
    assert config["audio"]["output"]["voice"] == DEFAULT_VOICE == "alloy"
    assert config["instructions"] == DEFAULT_INSTRUCTIONS and DEFAULT_INSTRUCTIONS
    await ws.close()


async def test_response_instructions_replace_the_sessions_for_that_response(
        sim: RealtimeSimulator) -> None:
    ws = await _open(sim)
    record = sim.sessions[0]
    await ws.send(rt.dumps({"type": "session.update", "event_id": "cfg", "session": {
        "type": "realtime", "instructions": "PERSONA"}}))
    await record.wait_for("session.updated", direction="sent")
    await ws.send(rt.dumps({"type": "response.create", "event_id": "r1",
                            "response": {"instructions": "ONLY THIS"}}))
    await record.wait_for("response.done", direction="sent")
    await ws.send(rt.dumps({"type": "response.create", "event_id": "r2"}))
    await record.wait_for("response.done", direction="sent", nth=2)
    ran = [(r.instructions, r.instructions_source) for r in record.responses]
    assert ran == [("ONLY THIS", "response"), ("PERSONA", "session")]
    await ws.close()


async def test_a_rejected_session_update_names_its_event_and_keeps_the_socket(
        sim: RealtimeSimulator) -> None:
    ws = await _open(sim)
    record = sim.sessions[0]
    sim.reject_session_updates(1)
    await ws.send(rt.dumps({"type": "session.update", "event_id": "cfg_9", "session": {
        "type": "realtime", "instructions": "PERSONA"}}))
    err = await record.wait_for("error", direction="sent")
    assert err["error"]["event_id"] == "cfg_9"
    assert record.config["instructions"] == DEFAULT_INSTRUCTIONS  # discarded whole
    await ws.send(rt.dumps({"type": "session.update", "event_id": "cfg_10", "session": {
        "type": "realtime", "instructions": "PERSONA"}}))
    await record.wait_for("session.updated", direction="sent")
    assert record.config["instructions"] == "PERSONA" and not record.is_closed
    await ws.close()

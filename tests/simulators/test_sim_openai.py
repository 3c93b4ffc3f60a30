"""The OpenAI Realtime simulator speaks GA to the letter (https://platform.openai.com/docs/api-reference/realtime).

Driven with a plain `websockets` client, as the gateway will. No sleeps: every wait is on an
event with a bounded timeout.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from callbridge.shared.pcm import read_wav, resample, rms
from callbridge.simulators import ASSETS_DIR
from callbridge.simulators.openai_realtime import RealtimeSimulator, Reply
from callbridge.simulators.openai_realtime.audio import decode_g711, encode_g711
from callbridge.simulators.openai_realtime.sdk_validation import validate_client_event
from callbridge.simulators.openai_realtime.vad import (
    EnergyVad,
    SpeechStarted,
    SpeechStopped,
    VadConfig,
)
from callbridge.simulators.openai_realtime.validation import (
    DEFAULT_INSTRUCTIONS,
    default_session,
    validate_update,
)
from callbridge.simulators.openai_realtime.wire import ClientError

KEY = "sk-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
RESPONSE_ORDER = [  # ref, "Events a bridge needs"
    "response.created", "response.output_item.added", "conversation.item.added",
    "response.content_part.added", "response.output_audio.delta",
    "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
    "response.output_audio.done", "response.content_part.done", "conversation.item.done",
    "response.output_item.done", "response.done", "rate_limits.updated"]

MakeSim = Callable[..., Awaitable[RealtimeSimulator]]


@pytest.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    sims: list[RealtimeSimulator] = []

    async def make(**kwargs: Any) -> RealtimeSimulator:
        kwargs.setdefault("api_key", KEY)
        kwargs.setdefault("speed", 20.0)
        sim = RealtimeSimulator(**kwargs)
        await sim.start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        await sim.stop()


@pytest.fixture
async def sim(make_sim: MakeSim) -> RealtimeSimulator:
    return await make_sim()


def caller_pcm() -> bytes:
    pcm, rate = read_wav(ASSETS_DIR / "caller_order_status.wav")
    return resample(pcm, rate, 24000)


async def open_ws(sim: RealtimeSimulator, query: str = "?model=gpt-realtime",
                  headers: dict[str, str] | None = None) -> ClientConnection:
    return await connect(sim.url + query, additional_headers=AUTH if headers is None
                         else headers, max_size=None, compression=None)


async def recv(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    evt = orjson.loads(raw)
    assert next(iter(evt)) == "type", "type must be the first key of every server event"
    assert "event_id" in evt
    return evt


async def recv_until(ws: ClientConnection, match: str | Callable[[dict[str, Any]], bool],
                     timeout: float = 20.0, limit: int = 5000) -> list[dict[str, Any]]:
    """Events up to and including the first match (bounded in count and time)."""
    pred = (lambda e: e["type"] == match) if isinstance(match, str) else match
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        for _ in range(limit):
            evt = await recv(ws)
            out.append(evt)
            if pred(evt):
                return out
    raise AssertionError(f"no match in {limit} events")


async def send(ws: ClientConnection, evt: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(evt).decode())


async def append(ws: ClientConnection, pcm: bytes, frame: int = 960) -> None:
    for i in range(0, len(pcm), frame):
        await send(ws, {"type": "input_audio_buffer.append",
                        "audio": base64.b64encode(pcm[i:i + frame]).decode()})


async def ready(sim: RealtimeSimulator, **kwargs: Any) -> ClientConnection:
    ws = await open_ws(sim, **kwargs)
    assert (await recv(ws))["type"] == "session.created"
    return ws


async def ga_update(ws: ClientConnection, **input_audio: Any) -> dict[str, Any]:
    await send(ws, {"type": "session.update", "event_id": "cfg", "session": {
        "type": "realtime", "audio": {"input": input_audio}}})
    evt = await recv(ws)
    assert evt["type"] == "session.updated", evt
    return evt


async def expect_close(ws: ClientConnection) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        await recv_until(ws, lambda e: False, timeout=10)
    return info.value


# handshake --------------------------------------------------------------------------------

async def test_beta_header_is_an_error_then_close_4000(sim: RealtimeSimulator) -> None:
    ws = await open_ws(sim, headers={**AUTH, "OpenAI-Beta": "realtime=v1"})
    err = await recv(ws)
    assert list(err) == ["type", "event_id", "error"]
    assert err["error"]["code"] == "beta_api_shape_disabled"
    assert err["error"]["type"] == "invalid_request_error"
    assert set(err["error"]) == {"type", "code", "message", "param", "event_id"}
    closed = await expect_close(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 4000
    assert await sim.sessions[0].wait_closed() == 4000


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong"},
                                     {"Authorization": f"Basic {KEY}"}])
async def test_missing_or_wrong_key_closes_3000(sim: RealtimeSimulator,
                                                headers: dict[str, str]) -> None:
    ws = await open_ws(sim, headers=headers)
    err = await recv(ws)
    assert err["error"]["code"] == "invalid_api_key"
    assert "sk-wrong" not in err["error"]["message"]  # keys are never echoed
    closed = await expect_close(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 3000


@pytest.mark.parametrize(("query", "code"), [("", "missing_model"),
                                             ("?model=", "missing_model"),
                                             ("?model=gpt-4o", "invalid_model")])
async def test_bad_model_closes_4000(sim: RealtimeSimulator, query: str, code: str) -> None:
    ws = await open_ws(sim, query=query)
    err = await recv(ws)
    assert err["error"]["code"] == code
    closed = await expect_close(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 4000


@pytest.mark.parametrize("model", ["gpt-realtime", "gpt-realtime-mini", "gpt-realtime-1.5",
                                   "gpt-realtime-2", "gpt-realtime-2025-08-28"])
async def test_session_created_reports_live_defaults(sim: RealtimeSimulator, model: str) -> None:
    ws = await open_ws(sim, query=f"?model={model}")
    created = await recv(ws)
    assert created["type"] == "session.created"
    session = created["session"]
    assert session["type"] == "realtime" and session["model"] == model
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
        "silence_duration_ms": 200, "idle_timeout_ms": None, "create_response": True,
        "interrupt_response": True}
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    record = sim.sessions[0]
    assert record.model == model and record.headers["authorization"] == AUTH["Authorization"]
    await ws.close()
    assert await record.wait_closed() == 1000


async def test_refuse_next_then_accept(sim: RealtimeSimulator) -> None:
    sim.refuse_next(1, code=4000)
    ws = await open_ws(sim)
    assert (await recv(ws))["type"] == "error"
    closed = await expect_close(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 4000
    ws2 = await ready(sim)
    await ws2.close()
    assert [s.handshake_error for s in await sim.wait_for_sessions(2)] == ["server_error", None]


# session.update -----------------------------------------------------------------------------

async def test_beta_shaped_update_is_rejected_not_applied_and_socket_stays_open(
        sim: RealtimeSimulator) -> None:
    ws = await ready(sim)
    await send(ws, {"type": "session.update", "event_id": "beta_1", "session": {
        "modalities": ["audio", "text"], "voice": "alloy", "instructions": "BETA",
        "turn_detection": {"type": "server_vad"}, "input_audio_format": "pcm16"}})
    err = (await recv(ws))["error"]
    assert err == {"type": "invalid_request_error", "code": "missing_required_parameter",
                   "message": "Missing required parameter: 'session.type'.",
                   "param": "session.type", "event_id": "beta_1"}
    for key in ("modalities", "turnDetection", "temperature", "voice", "input_audio_format",
                "turn_detection"):
        await send(ws, {"type": "session.update", "event_id": f"b_{key}", "session": {
            "type": "realtime", "instructions": "BETA", key: "x"}})
        err = (await recv(ws))["error"]
        assert err["code"] == "unknown_parameter"
        assert err["message"] == f"Unknown parameter: 'session.{key}'."
        assert err["param"] == f"session.{key}" and err["event_id"] == f"b_{key}"
    record = sim.sessions[0]
    assert record.session_updates == []
    assert record.config["instructions"] == DEFAULT_INSTRUCTIONS  # the live default, not BETA
    updated = await ga_update(ws, turn_detection={"type": "server_vad",
                                                  "silence_duration_ms": 500})
    assert updated["session"]["instructions"] == DEFAULT_INSTRUCTIONS
    assert not record.is_closed


async def test_valid_ga_update_is_applied(sim: RealtimeSimulator) -> None:
    ws = await ready(sim)
    update = {"type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"],
              "instructions": "You are ACME's phone agent.",
              "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                  "noise_reduction": {"type": "near_field"},
                                  "transcription": {"model": "gpt-4o-transcribe"},
                                  "turn_detection": {"type": "server_vad", "threshold": 0.6,
                                                     "prefix_padding_ms": 200,
                                                     "silence_duration_ms": 500,
                                                     "create_response": True,
                                                     "interrupt_response": True}},
                        "output": {"format": {"type": "audio/pcm", "rate": 24000},
                                   "voice": "cedar"}},
              "tools": [{"type": "function", "name": "hang_up", "description": "End the call",
                         "parameters": {"type": "object", "properties": {}}}],
              "tool_choice": "auto"}
    await send(ws, {"type": "session.update", "event_id": "cfg_1", "session": update})
    updated = await recv(ws)
    assert updated["type"] == "session.updated"
    session = updated["session"]
    assert session["instructions"] == update["instructions"]
    assert session["audio"]["output"]["voice"] == "cedar"
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert session["tools"][0]["name"] == "hang_up" and session["id"]
    assert sim.sessions[0].session_updates == [update]


def test_validation_rules() -> None:
    base = default_session("gpt-realtime", "sess_1", 3600)

    def err(update: dict[str, Any], locked: bool = False) -> ClientError:
        with pytest.raises(ClientError) as info:
            validate_update(base, {"type": "realtime", **update}, voice_locked=locked)
        return info.value

    e = err({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}})
    assert (e.code, e.param) == ("invalid_value", "session.audio.input.format.rate")
    assert err({"audio": {"output": {"voice": "nova"}}}).param == "session.audio.output.voice"
    e = err({"audio": {"input": {"turn_detection": {"type": "push_to_talk"}}}})
    assert e.param == "session.audio.input.turn_detection.type"
    assert err({"audio": {"output": {"voice": "ash"}}}, locked=True).code == "cannot_update_voice"
    # Unknown keys are the SDK types' business now (checked before validate_update runs).
    with pytest.raises(ClientError) as info:
        validate_client_event({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turnDetection": None}}}})
    assert (info.value.code, info.value.param) == ("unknown_parameter",
                                                   "session.audio.input.turnDetection")
    new = validate_update(base, {"type": "realtime", "audio": {
        "input": {"turn_detection": None, "format": {"type": "audio/pcmu"}},
        "output": {"format": {"type": "audio/pcma"}, "voice": "alloy"}}}, voice_locked=True)
    assert new["audio"]["input"]["turn_detection"] is None
    assert new["audio"]["output"]["format"] == {"type": "audio/pcma"}
    new = validate_update(base, {"type": "realtime", "audio": {"input": {"turn_detection": {
        "type": "semantic_vad", "eagerness": "high"}}}}, voice_locked=False)
    assert new["audio"]["input"]["turn_detection"]["eagerness"] == "high"
    assert base["audio"]["input"]["turn_detection"]["type"] == "server_vad"  # not mutated


# VAD and responses ------------------------------------------------------------------------

def test_energy_vad_on_speech_and_silence() -> None:
    vad = EnergyVad(VadConfig(silence_duration_ms=500))
    assert vad.feed(bytes(48 * 2000)) == []
    pcm = caller_pcm()
    events = [e for i in range(0, len(pcm), 1000) for e in vad.feed(pcm[i:i + 1000])]
    events += vad.feed(bytes(48 * 1000))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    start, stop = events
    assert isinstance(stop, SpeechStopped)
    # Speech begins ~60 ms after the 2 s of silence; the start includes 300 ms of prefix.
    assert 2000 - 300 <= start.audio_start_ms < 2200 - 300
    assert 2000 + 3500 <= stop.audio_end_ms <= 2000 + 4300
    short = EnergyVad(VadConfig(silence_duration_ms=200))
    turns = short.feed(pcm + bytes(48 * 500))
    assert sum(isinstance(e, SpeechStopped) for e in turns) >= 2  # pauses split the turn


async def test_vad_turn_gets_a_response_with_real_audio_in_order(sim: RealtimeSimulator) -> None:
    ws = await ready(sim)
    await ga_update(ws, transcription={"model": "gpt-4o-transcribe"},
                    turn_detection={"type": "server_vad", "silence_duration_ms": 500})
    await append(ws, caller_pcm() + bytes(48 * 800))
    events = await recv_until(ws, "rate_limits.updated")
    types = [e["type"] for e in events if e["type"] !=
             "conversation.item.input_audio_transcription.completed"]
    turn = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    assert types[:5] == turn
    started, stopped, committed = events[0], events[1], events[2]
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert 0 <= started["audio_start_ms"] < stopped["audio_end_ms"] <= 4500
    collapsed = [t for i, t in enumerate(types[5:]) if i == 0 or t != types[5:][i - 1]]
    assert collapsed == RESPONSE_ORDER
    audio = b"".join(base64.b64decode(e["delta"]) for e in events
                     if e["type"] == "response.output_audio.delta")
    assert len(audio) > 48 * 3000 and rms(audio) > 1000  # real speech, not silence
    delta = next(e for e in events if e["type"] == "response.output_audio.delta")
    assert {"response_id", "item_id", "output_index", "content_index", "delta"} <= set(delta)
    done = events[-2]["response"]
    assert done["status"] == "completed" and done["usage"]["output_tokens"] > 0
    transcribed = (await sim.sessions[0].wait_for(
        "conversation.item.input_audio_transcription.completed"))
    assert transcribed["item_id"] == committed["item_id"]
    assert transcribed["transcript"].startswith("[caller audio ")
    record = sim.sessions[0]
    assert record.responses[0].status == "completed" and record.responses[0].audio_ms > 3000
    assert record.appended_ms == pytest.approx((len(caller_pcm()) + 48 * 800) / 48)
    assert all("delta" not in e for e in record.sent
               if e["type"] == "response.output_audio.delta")  # summarised, not stored


async def test_speech_during_a_response_cancels_it(make_sim: MakeSim) -> None:
    sim = await make_sim(speed=1.0)
    ws = await ready(sim)
    await ga_update(ws, turn_detection={"type": "server_vad", "silence_duration_ms": 500})
    await send(ws, {"type": "response.create", "event_id": "r1"})
    await recv_until(ws, "response.output_audio.delta")
    await append(ws, caller_pcm()[: 48 * 1000])
    events = await recv_until(ws, "response.done")
    types = [e["type"] for e in events]
    cut = types.index("input_audio_buffer.speech_started")
    assert "response.output_audio.delta" not in types[cut:]
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    record = sim.sessions[0]
    assert record.cancels[0]["reason"] == "turn_detected"
    assert record.responses[0].status == "cancelled" and record.truncates == []


async def test_response_cancel_and_cancel_without_response(make_sim: MakeSim) -> None:
    sim = await make_sim(speed=1.0)
    ws = await ready(sim)
    await send(ws, {"type": "response.create", "event_id": "r1",
                    "response": {"instructions": "Greet the caller."}})
    await recv_until(ws, "response.output_audio.delta")
    await send(ws, {"type": "response.create", "event_id": "r2"})
    err = (await recv_until(ws, "error"))[-1]["error"]
    assert err["code"] == "conversation_already_has_active_response"
    assert err["event_id"] == "r2"
    await send(ws, {"type": "response.cancel", "event_id": "c1"})
    done = (await recv_until(ws, "response.done"))[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "client_cancelled"
    await send(ws, {"type": "response.cancel", "event_id": "c2"})
    err = (await recv_until(ws, "error"))[-1]["error"]
    assert (err["code"], err["event_id"]) == ("response_cancel_not_active", "c2")
    assert sim.sessions[0].responses[0].instructions == "Greet the caller."


async def test_truncate_bounds(sim: RealtimeSimulator) -> None:
    ws = await ready(sim)
    await send(ws, {"type": "response.create"})
    events = await recv_until(ws, "response.done")
    item_id = next(e["item"]["id"] for e in events if e["type"] == "response.output_item.added")
    generated = sim.sessions[0].responses[0].audio_ms
    assert generated == 3906  # agent_greeting.wav, whole ms of PCM16 at 24 kHz
    await send(ws, {"type": "conversation.item.truncate", "event_id": "t1", "item_id": item_id,
                    "content_index": 0, "audio_end_ms": generated + 500})
    err = (await recv_until(ws, "error"))[-1]["error"]
    assert err["code"] == "invalid_value" and err["param"] == "audio_end_ms"
    assert err["message"] == (f"Audio content of {generated}ms is already shorter than "
                              f"{generated + 500}ms")
    await send(ws, {"type": "conversation.item.truncate", "event_id": "t2", "item_id": item_id,
                    "content_index": 0, "audio_end_ms": 1200})
    ok = (await recv_until(ws, "conversation.item.truncated"))[-1]
    assert (ok["item_id"], ok["content_index"], ok["audio_end_ms"]) == (item_id, 0, 1200)
    await send(ws, {"type": "conversation.item.truncate", "event_id": "t3",
                    "item_id": "item_nope", "content_index": 0, "audio_end_ms": 10})
    err = (await recv_until(ws, "error"))[-1]["error"]
    assert err["param"] == "item_id" and err["event_id"] == "t3"
    record = sim.sessions[0]
    assert [t["ok"] for t in record.truncates] == [False, True, False]
    assert [t["event_id"] for t in record.truncate_errors] == ["t1", "t3"]


async def test_tool_call_reply_and_function_call_output(make_sim: MakeSim) -> None:
    sim = await make_sim(script=[Reply(ASSETS_DIR / "agent_goodbye.wav", "Goodbye!",
                                       ("hang_up", {"reason": "caller said goodbye"}))])
    ws = await ready(sim)
    await send(ws, {"type": "response.create"})
    events = await recv_until(ws, "response.done")
    call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert call["name"] == "hang_up"
    assert orjson.loads(call["arguments"]) == {"reason": "caller said goodbye"}
    assert {"call_id", "item_id", "response_id"} <= set(call)
    types = [e["type"] for e in events]
    assert types.index("response.output_audio.done") < types.index(
        "response.function_call_arguments.done")
    assert [o["type"] for o in events[-1]["response"]["output"]] == ["message", "function_call"]
    await send(ws, {"type": "conversation.item.create", "event_id": "i1", "item": {
        "type": "function_call_output", "call_id": call["call_id"], "output": "ok"}})
    added = (await recv_until(ws, "conversation.item.done"))
    assert [e["type"] for e in added][-2:] == ["conversation.item.added",
                                               "conversation.item.done"]
    assert added[-1]["previous_item_id"] == call["item_id"]


# errors that keep the socket open ------------------------------------------------------------

async def test_malformed_client_events_are_recoverable(sim: RealtimeSimulator) -> None:
    ws = await ready(sim)
    await send(ws, {"type": "response.audio.delta", "event_id": "u1"})
    err = (await recv(ws))["error"]
    assert (err["code"], err["param"], err["event_id"]) == ("invalid_value", "type", "u1")
    await ws.send(b"\x00\x01binary")
    assert (await recv(ws))["error"]["code"] == "invalid_event"
    await ws.send("{not json")
    assert (await recv(ws))["error"]["code"] == "invalid_event"
    await send(ws, {"type": "input_audio_buffer.append", "event_id": "a1", "audio": "@@@"})
    err = (await recv(ws))["error"]
    assert (err["code"], err["event_id"]) == ("invalid_value", "a1")
    await send(ws, {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
    assert (await recv(ws))["type"] == "conversation.item.added"
    assert len(sim.sessions[0].errors_sent) == 4 and not sim.sessions[0].is_closed


async def test_manual_commit_without_turn_detection(sim: RealtimeSimulator) -> None:
    ws = await ready(sim)
    await ga_update(ws, turn_detection=None)
    await append(ws, bytes(48 * 50))
    await send(ws, {"type": "input_audio_buffer.commit", "event_id": "m1"})
    err = (await recv(ws))["error"]
    assert (err["code"], err["event_id"]) == ("input_audio_buffer_commit_empty", "m1")
    await append(ws, caller_pcm()[: 48 * 400])
    await send(ws, {"type": "input_audio_buffer.commit"})
    events = await recv_until(ws, "conversation.item.done")
    assert [e["type"] for e in events] == ["input_audio_buffer.committed",
                                           "conversation.item.added", "conversation.item.done"]
    await send(ws, {"type": "input_audio_buffer.clear"})
    assert (await recv(ws))["type"] == "input_audio_buffer.cleared"
    assert not any(e["type"].startswith("response.") for e in sim.sessions[0].sent)


def test_g711_round_trip() -> None:
    pcm = np.frombuffer(resample(caller_pcm(), 24000, 8000), dtype="<i2")
    for fmt in ("audio/pcmu", "audio/pcma"):
        back = np.frombuffer(decode_g711(encode_g711(pcm, fmt), fmt), dtype="<i2")
        error = np.abs(back.astype(np.int32) - pcm.astype(np.int32))
        assert error.max() <= 1100 and float(np.mean(error)) < 60


# session limits and faults -----------------------------------------------------------------

async def test_session_expiry_closes_1001(make_sim: MakeSim) -> None:
    sim = await make_sim(max_session_s=0.5)
    ws = await ready(sim)
    err = (await recv(ws))["error"]
    assert err["code"] == "session_expired" and err["event_id"] is None
    closed = await expect_close(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 1001
    assert sim.sessions[0].expired and await sim.sessions[0].wait_closed() == 1001


async def test_expire_all_uses_the_live_message(sim: RealtimeSimulator) -> None:
    ws = await ready(sim)
    await sim.expire_all()
    err = (await recv(ws))["error"]
    assert err["message"] == "Your session hit the maximum duration of 60 minutes."
    closed = await expect_close(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 1001


async def test_drop_all_is_a_reset_without_close_frame(sim: RealtimeSimulator) -> None:
    ws = await ready(sim)
    await sim.drop_all()
    with pytest.raises(ConnectionClosedError) as info:
        await recv(ws)
    assert info.value.rcvd is None
    record = sim.sessions[0]
    assert record.dropped and record.closed_code == 1006
    ws2 = await ready(sim)  # the server itself keeps serving
    await ws2.close()


async def test_stall_holds_events_until_unstalled(sim: RealtimeSimulator) -> None:
    ws = await ready(sim)
    sim.stall()
    await send(ws, {"type": "response.create"})
    with pytest.raises(TimeoutError):  # a bounded check that nothing arrives
        await recv(ws, timeout=0.5)
    fresh = await ready(sim)  # new connections are not stalled
    await fresh.close()
    sim.unstall()
    assert (await recv(ws))["type"] == "response.created"
    await ws.close()

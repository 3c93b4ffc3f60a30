"""Regression (found by the fault suite, scenario 10 full run): a model `audio.delta` whose
`delta` is a string with non-ASCII characters makes `binascii.a2b_base64` raise ValueError,
which `Relay.on_model_event` did not catch, so the session's model task failed and the call
was closed with 1011 — although the relay promises "Never raises: a bad event is logged and
skipped" (services/media_gateway/relay.py, `_on_audio_delta` / the except tuple of
`on_model_event`).

Regression (fault suite scenario 9, gateway RSS +73 kB per call): an ended `MediaSession`
must be freed by reference counting alone. Parts of it referring back to it (a closure over
`self`, a bound method, an exception chain that holds asyncio's Timeout and so the task)
made each call a reference cycle that only the cyclic GC frees, and in the gateway process
full collections almost never run: the calls' soxr filters and socket buffers piled up."""

from __future__ import annotations

import asyncio
import gc
import weakref
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest
from websockets.asyncio.client import connect

from callbridge.services.media_gateway.bargein import BargeIn
from callbridge.services.media_gateway.caller_output import CallerOutput
from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.services.media_gateway.model_link import ModelLink
from callbridge.services.media_gateway.relay import Relay
from callbridge.services.media_gateway.server import Gateway
from callbridge.services.media_gateway.session import MediaSession
from callbridge.services.media_gateway.state import CallRecord
from callbridge.services.media_gateway.turns import ResponseTurns
from callbridge.services.media_gateway.wire_watch import WireWatch
from callbridge.services.media_gateway.ws_fastpath import MediaConnection
from callbridge.shared.audio.resampler import StreamResampler
from callbridge.shared.infobip_media import build_connected
from callbridge.shared.profiles import AgentProfile, ProfileBook
from tests.gateway.fixtures import (
    GatewayFactory,
    LegFactory,
    issue_token,
    new_call_id,
)
from tests.waiting import wait_until


class _Barge:
    def is_cancelled(self, response_id: object) -> bool:
        return False

    def item(self, item_id: str, response_id: str) -> Any:
        return SimpleNamespace(generated_ms=0.0)


class _Host:
    def on_response_done(self, response_id: str | None, status: str) -> None:
        raise AssertionError("not a response.done")


class _Output:
    def push(self, pcm24: bytes, item_id: str, received_at: float) -> None:
        raise AssertionError("a malformed delta reached the caller")


async def test_non_ascii_audio_delta_is_skipped_not_raised() -> None:
    host = _Host()
    relay = Relay(host, cast(MediaConnection, None), cast(ModelLink, None),
                  cast(CallerOutput, _Output()), cast(BargeIn, _Barge()),
                  cast(ResponseTurns, None), cast(CallRecord, None), WireWatch("c", "gw"),
                  GatewaySettings(openai_api_key="sk-test"), 16000)
    raw = orjson.dumps({"type": "response.output_audio.delta", "response_id": "resp_1",
                        "item_id": "item_1", "delta": "AAAA\u00e9AAA"})
    relay.on_model_event(raw, 0.0)  # must not raise


# Ended sessions are freed without the cyclic GC ---------------------------------------------

_CALLS = 3


async def _started_session(gw: Gateway) -> weakref.ref[MediaSession]:
    """A weak reference to the gateway's one live session, once it is relaying."""
    session = await wait_until(
        lambda: next((s for s in gw.sessions if s.started), None), timeout=15,
        what="a started session")
    return weakref.ref(session)


async def _idle_call(gw: Gateway, redis_client: Any) -> weakref.ref[MediaSession]:
    """Connected, then no audio: the gateway ends the call (idle timeout, grace 0)."""
    call_id = new_call_id()
    token = await issue_token(redis_client, call_id)
    async with connect(gw.url, compression=None) as ws:
        await ws.send(build_connected(16000, {"cbToken": token, "cbCallId": call_id}))
        ref = await _started_session(gw)
        async with asyncio.timeout(15):
            async for _ in ws:  # frames from the gateway until it closes
                pass
    return ref


@pytest.mark.parametrize("ending", ["caller_after_greeting", "caller_before_any_audio",
                                    "gateway_idle_timeout"])
async def test_ended_sessions_are_freed_without_the_cyclic_gc(
        ending: str, make_gateway: GatewayFactory, open_leg: LegFactory,
        redis_client: Any) -> None:
    quiet = ProfileBook(profiles={"quiet": AgentProfile(greeting=None)})  # never speaks first
    gw = await make_gateway(profiles=quiet, gateway_idle_timeout_s=1.0)
    refs: list[weakref.ref[MediaSession]] = []
    gc.collect()
    gc.disable()  # what is not freed by refcount now stays: the assertion sees every cycle
    try:
        for _ in range(_CALLS):
            if ending == "gateway_idle_timeout":
                refs.append(await _idle_call(gw, redis_client))
            else:
                before_audio = ending == "caller_before_any_audio"
                leg = await open_leg(gw, 16000, profile="quiet" if before_audio else "default")
                refs.append(await _started_session(gw))
                if not before_audio:
                    assert await leg.wait_agent_audio(timeout=15)
                await leg.hangup()
            await wait_until(lambda: not gw.sessions, timeout=15, what="the session ended")
        alive = sum(1 for ref in refs if ref() is not None)
        assert alive == 0, f"{alive} of {len(refs)} ended sessions are only freed by the GC"
    finally:
        gc.enable()


def test_closed_resampler_frees_its_filter_and_emits_nothing() -> None:
    rs = StreamResampler(16000, 24000)
    rs.process(bytes(640))
    rs.close()
    assert rs.process(bytes(640)) == b"" and rs.flush() == b"" and rs.delay_ms == 0.0
    assert not rs.passthrough


async def test_state_flush_in_slices_writes_every_record_member_and_line(
        redis_url: str) -> None:
    """Session records are written in slices of `_RECORDS_PER_PIPELINE` (one pipeline of
    every call's counters stalled the event loop for several ms at hundreds of calls); all
    of them, plus the gateway's member set and transcript lines, must still land."""
    import redis.asyncio as aioredis

    from callbridge.services.media_gateway import state
    from callbridge.shared import redis_keys

    calls = [f"slice-{i}" for i in range(3 * state._RECORDS_PER_PIPELINE + 5)]
    store = state.StateStore(state.connect_redis(redis_url), "gw-slices", 500,
                             lambda: state.Heartbeat(sessions=0, ready=True, counters={}))
    for i, call_id in enumerate(calls):
        store.update(call_id, frames_in=i, state="streaming")
        store.add_member(call_id)
        store.transcript(call_id, "agent", f"line {i}")
    store.start()
    r = aioredis.Redis.from_url(redis_url)
    try:
        members_key = redis_keys.gateway_sessions("gw-slices")
        await wait_until(lambda: _count(r.scard(members_key), len(calls)),
                         what="every call in the gateway's session set")
        for i, call_id in enumerate(calls):
            record = await r.hgetall(redis_keys.session_record(call_id))
            assert record[b"frames_in"] == str(i).encode()
            assert await r.ttl(redis_keys.session_record(call_id)) > 0
            lines = await r.xrange(redis_keys.transcript_stream(call_id))
            assert [entry[b"text"] for _, entry in lines] == [f"line {i}".encode()]
    finally:
        await store.close()
        await r.aclose()


async def _count(pending: Any, expected: int) -> bool:
    return int(await pending) == expected


def test_gc_pauses_are_timed_and_long_ones_logged(caplog: pytest.LogCaptureFixture) -> None:
    import gc

    from prometheus_client import REGISTRY

    from callbridge.services.media_gateway import gc_pauses

    def count(generation: str) -> float:
        return REGISTRY.get_sample_value("callbridge_gateway_gc_pause_seconds_count",
                                         {"generation": generation}) or 0.0

    gc_pauses.install()
    gc_pauses.install()  # idempotent: one callback
    assert gc.callbacks.count(gc_pauses._on_gc) == 1
    before = count("2")
    old, gc_pauses.WARN_AFTER_S = gc_pauses.WARN_AFTER_S, 0.0
    try:
        with caplog.at_level("WARNING", logger="callbridge.services.media_gateway.gc_pauses"):
            gc.collect(2)
    finally:
        gc_pauses.WARN_AFTER_S = old
        gc.callbacks.remove(gc_pauses._on_gc)
    assert count("2") == before + 1
    assert "generation 2" in caplog.text

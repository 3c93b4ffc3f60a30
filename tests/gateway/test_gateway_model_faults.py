"""Model socket faults (drops without a close frame, `session_expired`: model_link.py and
docs/protocol-assumptions.md, "OpenAI Realtime"): reconnect, re-seed, hold sound meanwhile;
a model that never comes back gets the spoken fallback and a transfer or hang-up job
(services/media_gateway/ending.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from callbridge.services.media_gateway.model_link import CONFIG_REJECTED, FAILOVERS, ModelLink
from callbridge.shared import realtime_events as rt
from callbridge.shared import redis_keys
from callbridge.shared.jobs import HANGUP_CALL, TRANSFER_CALL, job_id
from callbridge.shared.pcm import is_silent
from callbridge.shared.profiles import AgentProfile, ProfileBook
from callbridge.simulators.infobip import MediaLeg
from callbridge.simulators.openai_realtime import RealtimeSimulator, Reply
from tests.gateway.fixtures import (
    GatewayFactory,
    LegFactory,
    caller_speech,
    gateway_settings,
    wait_redis,
)
from tests.waiting import wait_until

GATEWAY_HOLD_LIMIT_MS = 1500


def longest_silence_ms(leg: MediaLeg, since: float, until: float) -> float:
    """Longest run of silent frames the caller received in [since, until]."""
    longest = run = 0.0
    for t, frame in leg.frames:
        if t < since or t > until:
            continue
        run = run + 20.0 if is_silent(frame) else 0.0
        longest = max(longest, run)
    return longest


def reseeded(rt: RealtimeSimulator, index: int) -> list[str]:
    session = rt.sessions[index]
    return [e["item"]["content"][0]["text"] for e in session.received
            if e["type"] == "conversation.item.create" and e["item"]["type"] == "message"]


@pytest.mark.parametrize("fault", ["drop", "expire"])
async def test_model_loss_mid_call_reconnects_and_resumes(
        fault: str, make_gateway: GatewayFactory, open_leg: LegFactory,
        rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway(gateway_hold_limit_ms=GATEWAY_HOLD_LIMIT_MS)
    leg = await open_leg(gw, 16000)
    session = (await rt_sim.wait_for_sessions(1))[0]
    await session.wait_for("response.output_audio_transcript.done", timeout=20,
                           direction="sent")
    assert await leg.wait_agent_quiet(quiet_ms=1000, timeout=20)
    rt_sim.refuse_next(2, code=1011)  # the first two reconnects fail: the hold sound plays
    lost_at = time.time()
    if fault == "drop":
        await rt_sim.drop_all()
    else:
        await rt_sim.expire_all()
    await rt_sim.wait_for_sessions(4, timeout=15)
    resumed = rt_sim.sessions[3]
    await resumed.wait_for("response.created", timeout=15, direction="sent")
    assert await leg.wait_agent_audio(timeout=15, after=time.time() - 0.2)
    back_at = time.time()
    # Configured again (GA), with the conversation so far re-seeded as text, then resumed.
    assert resumed.session_updates and resumed.session_updates[0]["type"] == "realtime"
    assert "Hello, thanks for calling. How can I help you today?" in reseeded(rt_sim, 3)
    types = [e["type"] for e in resumed.received]
    assert types[0] == "session.update" and "response.create" in types
    # The caller heard the hold sound, never a silence longer than the hold limit.
    hold = [f for t, f in leg.frames if lost_at < t < back_at and not is_silent(f)]
    assert hold, "no hold sound while the model was away"
    assert longest_silence_ms(leg, lost_at + 0.2, back_at) <= GATEWAY_HOLD_LIMIT_MS
    if fault == "expire":
        assert rt_sim.sessions[0].expired
    await leg.hangup()


async def test_model_never_back_hangs_up_after_a_spoken_fallback(
        make_gateway: GatewayFactory, open_leg: LegFactory, redis_client: aioredis.Redis,
        rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway(gateway_model_reconnect_timeout_s=1.0, gateway_tool_end_grace_s=1.0)
    leg = await open_leg(gw, 8000)
    call_id = leg.custom_data["cbCallId"]
    assert await leg.wait_agent_quiet(quiet_ms=1000, timeout=20)
    failovers_before = failovers("ok") + failovers("failed")
    rt_sim.refuse_next(1000, code=1011)
    lost_at = time.time()
    await rt_sim.drop_all()
    raw = await wait_redis(lambda: redis_client.get(f"arq:job:{job_id(HANGUP_CALL, call_id)}"),
                           lambda v: v is not None, timeout=30, what="hang-up job")
    assert raw
    spoken = [f for t, f in leg.frames if t > lost_at + 1.0 and not is_silent(f)]
    assert len(spoken) * 20 >= 2000, "the spoken fallback was not played"
    assert await leg.wait_closed(15)
    record = await wait_redis(lambda: redis_client.hgetall(redis_keys.session_record(call_id)),
                              lambda r: r.get(b"state") == b"ended", what="session ended")
    assert record[b"end_reason"] == b"model_failed"
    assert failovers("ok") + failovers("failed") == failovers_before  # none configured


async def test_model_never_back_transfers_when_the_profile_can(
        make_gateway: GatewayFactory, open_leg: LegFactory, redis_client: aioredis.Redis,
        rt_sim: RealtimeSimulator) -> None:
    book = ProfileBook(profiles={"care": AgentProfile(transfer_number="+441134960000")},
                       routes={"default": "care"})
    await rt_sim.stop()  # no model at all from the start
    gw = await make_gateway(profiles=book, gateway_model_reconnect_timeout_s=1.0)
    leg = await open_leg(gw, 24000, profile="care")
    call_id = leg.custom_data["cbCallId"]
    await wait_redis(lambda: redis_client.get(f"arq:job:{job_id(TRANSFER_CALL, call_id)}"),
                     lambda v: v is not None, timeout=30, what="transfer job")
    assert not is_silent(leg.received_pcm()), "neither hold sound nor fallback was heard"
    await leg.hangup()


async def test_fatal_model_close_fails_fast(make_gateway: GatewayFactory, open_leg: LegFactory,
                                            redis_client: aioredis.Redis,
                                            rt_sim: RealtimeSimulator) -> None:
    """A wrong key closes with 3000: no retrying for GATEWAY_MODEL_RECONNECT_TIMEOUT_S."""
    gw = await make_gateway(openai_api_key="sk-wrong", gateway_model_reconnect_timeout_s=30.0)
    leg = await open_leg(gw, 16000)
    call_id = leg.custom_data["cbCallId"]
    started = time.monotonic()
    await wait_redis(lambda: redis_client.get(f"arq:job:{job_id(HANGUP_CALL, call_id)}"),
                     lambda v: v is not None, timeout=20, what="hang-up job")
    assert time.monotonic() - started < 15
    assert len(rt_sim.sessions) == 1 and rt_sim.sessions[0].closed_code == 3000
    await wait_until(lambda: leg.frames, what="frames")
    await leg.hangup()


# The audit's model-link findings, each against the simulator (which judges client events
# with the openai SDK's types) --------------------------------------------------------------

class _LinkRun:
    """A ModelLink run against the simulator, collecting every event it delivers."""

    def __init__(self, rt: RealtimeSimulator, profile: AgentProfile,
                 tools: list[dict[str, Any]] | None = None) -> None:
        settings = gateway_settings("redis://127.0.0.1:1/0", rt,
                                    gateway_model_reconnect_timeout_s=3.0)
        self.link = ModelLink(settings, profile, tools or [], lambda: [])
        self.events: list[dict[str, Any]] = []
        self.task: asyncio.Task[bool] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.link.run(
            lambda raw, at: self.events.append(orjson.loads(raw)), lambda: None,
            lambda first: None))

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def stop(self) -> None:
        await self.link.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def link_runs() -> AsyncIterator[list[_LinkRun]]:
    """Runs a test registers here are stopped even when the test fails."""
    runs: list[_LinkRun] = []
    try:
        yield runs
    finally:
        for run in runs:
            await run.stop()


async def test_greeting_keeps_the_profile_instructions(
        rt_sim: RealtimeSimulator, link_runs: list[_LinkRun]) -> None:
    """`response.instructions` replace the session's for that response: the greeting must
    carry the profile's persona too, not the bare greeting directive."""
    profile = AgentProfile(instructions="You are ACME's agent. Answer in French.",
                           greeting="Greet the caller.")
    run = _LinkRun(rt_sim, profile)
    link_runs.append(run)
    run.start()
    session = (await rt_sim.wait_for_sessions(1))[0]
    await session.wait_for("response.created", timeout=10, direction="sent")
    response = session.responses[0]
    assert response.instructions_source == "response"
    assert response.instructions is not None
    assert response.instructions.startswith("You are ACME's agent. Answer in French.")
    assert response.instructions.endswith("Greet the caller.")
    await run.stop()


async def test_resume_after_reconnect_keeps_the_profile_instructions(
        rt_sim: RealtimeSimulator, link_runs: list[_LinkRun]) -> None:
    profile = AgentProfile(instructions="You are ACME's agent.", greeting=None)
    run = _LinkRun(rt_sim, profile)
    link_runs.append(run)
    run.start()
    first = (await rt_sim.wait_for_sessions(1))[0]
    await first.wait_for("session.updated", timeout=10, direction="sent")
    await rt_sim.drop_all()
    second = (await rt_sim.wait_for_sessions(2, timeout=10))[1]
    await second.wait_for("response.created", timeout=10, direction="sent")
    instructions = second.responses[0].instructions or ""
    assert instructions.startswith("You are ACME's agent.") and "line to you dropped" in \
        instructions
    await run.stop()


async def test_rejected_session_update_is_detected_and_no_greeting_is_sent(
        rt_sim: RealtimeSimulator, link_runs: list[_LinkRun]) -> None:
    """The server discards a rejected update whole: the call would run on defaults (no
    persona, no tools). The link must notice, count it, and give up (no greeting)."""
    rt_sim.reject_session_updates(1)
    before = CONFIG_REJECTED._value.get()
    run = _LinkRun(rt_sim, AgentProfile())
    link_runs.append(run)
    run.start()
    assert run.task is not None
    assert await asyncio.wait_for(run.task, 10) is False  # the session's model-failure path
    assert run.link.config_rejected
    assert CONFIG_REJECTED._value.get() == before + 1
    session = rt_sim.sessions[0]
    assert session.errors_sent and session.errors_sent[0]["event_id"] == \
        session.received[0]["event_id"]
    assert "response.create" not in [e["type"] for e in session.received]
    assert len(rt_sim.sessions) == 1  # not retried: the same update would be refused again
    await run.stop()


async def test_rejected_session_update_ends_the_call(
        make_gateway: GatewayFactory, open_leg: LegFactory, redis_client: aioredis.Redis,
        rt_sim: RealtimeSimulator) -> None:
    rt_sim.reject_session_updates(1)
    gw = await make_gateway(gateway_tool_end_grace_s=1.0)
    leg = await open_leg(gw, 16000)
    call_id = leg.custom_data["cbCallId"]
    await wait_redis(lambda: redis_client.get(f"arq:job:{job_id(HANGUP_CALL, call_id)}"),
                     lambda v: v is not None, timeout=20, what="hang-up job")
    record = await wait_redis(lambda: redis_client.hgetall(redis_keys.session_record(call_id)),
                              lambda r: r.get(b"state") == b"ended", what="session ended")
    assert record[b"end_reason"] == b"model_failed"
    assert not rt_sim.sessions[0].responses  # nothing spoken on the server's defaults
    await leg.hangup()


@pytest.mark.parametrize(("code", "reconnects"), [(1008, False), (1000, False), (1012, True)])
async def test_only_retryable_close_codes_reconnect(
        code: int, reconnects: bool, rt_sim: RealtimeSimulator,
        link_runs: list[_LinkRun]) -> None:
    """The SDK's reconnect policy: 1001/1005/1006/1011/1012/1013/1015 only."""
    run = _LinkRun(rt_sim, AgentProfile(greeting=None))
    link_runs.append(run)
    run.start()
    first = (await rt_sim.wait_for_sessions(1))[0]
    await first.wait_for("session.updated", timeout=10, direction="sent")
    await rt_sim.close_all(code, "test")
    if reconnects:
        second = (await rt_sim.wait_for_sessions(2, timeout=10))[1]
        await second.wait_for("session.updated", timeout=10, direction="sent")
    else:
        assert run.task is not None
        assert await asyncio.wait_for(run.task, 10) is False
        assert run.link.last_close_code == code and len(rt_sim.sessions) == 1
    await run.stop()


@pytest.mark.parametrize("status", ["incomplete", "failed"])
async def test_tool_calls_of_unfinished_responses_are_not_delivered(
        status: str, link_runs: list[_LinkRun]) -> None:
    """Only a `completed` response's tool calls reach the session (which runs them)."""
    reply = Reply(None, "bye", tool_call=("hang_up", {"reason": "done"}), status=status)
    async with RealtimeSimulator(script=[reply, Reply(None, "ok", tool_call=(
            "hang_up", {"reason": "done"}))]) as sim:
        run = _LinkRun(sim, AgentProfile(greeting="Greet."))
        link_runs.append(run)
        run.start()
        session = (await sim.wait_for_sessions(1))[0]
        await session.wait_for("response.done", timeout=10, direction="sent")
        await wait_until(lambda: "response.done" in run.types(), what="response.done")
        assert rt.FUNCTION_CALL_DONE not in run.types()
        # A completed response's call is delivered, just before its response.done.
        run.link.send(rt.response_create())
        await session.wait_for("response.done", timeout=10, direction="sent", nth=2)
        await wait_until(lambda: run.types().count("response.done") == 2, what="2nd done")
        types = run.types()
        assert types.count(rt.FUNCTION_CALL_DONE) == 1
        assert types[types.index(rt.FUNCTION_CALL_DONE) + 1] == rt.RESPONSE_DONE
        await run.stop()


async def test_response_create_refused_during_an_active_response_is_retried(
        rt_sim: RealtimeSimulator, link_runs: list[_LinkRun]) -> None:
    run = _LinkRun(rt_sim, AgentProfile(greeting="Greet."))
    link_runs.append(run)
    run.start()
    session = (await rt_sim.wait_for_sessions(1))[0]
    await session.wait_for("response.created", timeout=10, direction="sent")
    ours = rt.response_create()
    assert run.link.send(ours)  # the greeting is still active: refused
    err = await session.wait_for("error", timeout=10, direction="sent")
    assert err["error"]["code"] == "conversation_already_has_active_response"
    assert err["error"]["event_id"] == ours["event_id"]
    await session.wait_for("response.created", timeout=15, direction="sent", nth=2)
    assert len(session.responses) == 2
    await run.stop()


# Failover to a secondary endpoint (model_endpoints.py; docs/protocol-assumptions.md) ------------

SECONDARY_KEY = "sk-secondary-FAILOVER-3c9e"
PRIMARY_KEY = "sk-sim"  # the rt_sim fixture's key (fixtures.gateway_settings)


@pytest.fixture
async def rt_secondary() -> AsyncIterator[RealtimeSimulator]:
    """A second Realtime endpoint standing in for an Azure OpenAI deployment: its own key,
    sent in an `api-key` header, and the model named by `?deployment=`."""
    sim = RealtimeSimulator(api_key=SECONDARY_KEY, speed=4.0, auth="api-key")
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def secondary_overrides(sim: RealtimeSimulator, **extra: Any) -> dict[str, Any]:
    return {"openai_secondary_realtime_url": f"{sim.url}?deployment=gpt-realtime-eu",
            "openai_secondary_api_key": SECONDARY_KEY, "openai_secondary_auth": "api-key",
            "openai_secondary_model": "gpt-realtime-eu", **extra}


def failovers(outcome: str) -> float:
    value: float = FAILOVERS.labels(outcome)._value.get()
    return value


def assert_credentials_kept_apart(primary: RealtimeSimulator,
                                  secondary: RealtimeSimulator) -> None:
    """Each endpoint saw its own key in its own header; the primary's never left for the
    secondary's host."""
    for s in primary.sessions:
        assert s.headers.get("authorization") == f"Bearer {PRIMARY_KEY}"
        assert "api-key" not in s.headers
    assert secondary.sessions
    for s in secondary.sessions:
        assert s.headers.get("api-key") == SECONDARY_KEY
        assert "authorization" not in s.headers
        assert not any(PRIMARY_KEY in v for v in s.headers.values())


async def agent_heard_after(leg: MediaLeg, since: float, ms: int = 500,
                            timeout: float = 15) -> None:
    """`ms` of audible audio arrived after `since`: the agent's voice, not the hold sound
    (which stops when the new socket opens, before its first audio delta)."""
    await wait_until(lambda: sum(20 for t, f in leg.frames if t > since and not is_silent(f))
                     >= ms, timeout=timeout, what=f"{ms} ms of agent audio")


async def test_primary_dead_for_good_fails_over_to_the_secondary_with_the_context(
        make_gateway: GatewayFactory, open_leg: LegFactory, redis_client: aioredis.Redis,
        rt_sim: RealtimeSimulator, rt_secondary: RealtimeSimulator) -> None:
    gw = await make_gateway(gateway_hold_limit_ms=GATEWAY_HOLD_LIMIT_MS,
                            gateway_model_reconnect_timeout_s=1.5,
                            **secondary_overrides(rt_secondary))
    leg = await open_leg(gw, 16000)
    call_id = leg.custom_data["cbCallId"]
    primary = (await rt_sim.wait_for_sessions(1))[0]
    await primary.wait_for("response.output_audio_transcript.done", timeout=20,
                           direction="sent")
    assert await leg.wait_agent_quiet(quiet_ms=500, timeout=20)
    # A caller turn and the agent's answer, so the context has both sides.
    await leg.play(caller_speech(16000))
    caller_said = await primary.wait_for(
        "conversation.item.input_audio_transcription.completed", timeout=20, direction="sent")
    await primary.wait_for("response.output_audio_transcript.done", timeout=20,
                           direction="sent", nth=2)
    assert await leg.wait_agent_quiet(quiet_ms=500, timeout=20, after=time.time())
    said = [e["transcript"] for e in primary.sent
            if e["type"] == "response.output_audio_transcript.done"]
    ok_before, failed_before = failovers("ok"), failovers("failed")
    primary_port = rt_sim.port

    lost_at = time.time()
    await rt_sim.stop()  # for good: the socket closes and new connections are refused
    secondary = (await rt_secondary.wait_for_sessions(1, timeout=15))[0]
    await secondary.wait_for("response.output_audio.delta", timeout=15, direction="sent")
    speaking_at = time.time()
    await agent_heard_after(leg, speaking_at)
    back_at = time.time()

    # Configured as a GA session for the secondary's model, then the conversation so far as
    # items, then the resume response.
    assert secondary.model == "gpt-realtime-eu"
    assert secondary.session_updates[0]["type"] == "realtime"
    assert secondary.session_updates[0]["model"] == "gpt-realtime-eu"
    types = [e["type"] for e in secondary.received]
    assert types[0] == "session.update"
    first_create = types.index("response.create")
    assert "conversation.item.create" in types[:first_create]
    assert reseeded(rt_secondary, 0) == [said[0], caller_said["transcript"], said[1]]
    assert "line to you dropped" in (secondary.responses[0].instructions or "")
    assert_credentials_kept_apart(rt_sim, rt_secondary)
    assert failovers("ok") == ok_before + 1 and failovers("failed") == failed_before
    # The hold sound covered both windows (primary, then the move): no long silence.
    assert longest_silence_ms(leg, lost_at + 0.2, speaking_at) <= GATEWAY_HOLD_LIMIT_MS
    assert not leg.closed
    record = await redis_client.hgetall(redis_keys.session_record(call_id))
    assert record.get(b"state") != b"ended"
    assert not await redis_client.get(f"arq:job:{job_id(HANGUP_CALL, call_id)}")

    # Once on the secondary the call stays there: a drop reconnects to it, even with the
    # primary back.
    revived = RealtimeSimulator(port=primary_port, api_key=PRIMARY_KEY)
    await revived.start()
    try:
        await rt_secondary.drop_all()
        again = (await rt_secondary.wait_for_sessions(2, timeout=15))[1]
        await again.wait_for("response.created", timeout=15, direction="sent")
        assert said[0] in reseeded(rt_secondary, 1)
        assert not revived.sessions
    finally:
        await revived.stop()
    assert failovers("ok") == ok_before + 1
    assert back_at - lost_at < 15
    await leg.hangup()


async def test_fatal_close_from_the_primary_fails_over_at_once(
        make_gateway: GatewayFactory, open_leg: LegFactory, rt_sim: RealtimeSimulator,
        rt_secondary: RealtimeSimulator) -> None:
    """3000 (bad key) will not heal by retrying: straight to the secondary, not after
    GATEWAY_MODEL_RECONNECT_TIMEOUT_S. The call had no conversation yet: it is greeted."""
    ok_before = failovers("ok")
    gw = await make_gateway(openai_api_key="sk-wrong", gateway_model_reconnect_timeout_s=30.0,
                            **secondary_overrides(rt_secondary))
    started = time.monotonic()
    leg = await open_leg(gw, 16000)
    secondary = (await rt_secondary.wait_for_sessions(1, timeout=10))[0]
    await secondary.wait_for("response.output_audio.delta", timeout=10, direction="sent")
    assert time.monotonic() - started < 8
    await agent_heard_after(leg, time.time() - 0.1)
    assert len(rt_sim.sessions) == 1 and rt_sim.sessions[0].closed_code == 3000
    assert "conversation.item.create" not in [e["type"] for e in secondary.received]
    assert secondary.headers.get("api-key") == SECONDARY_KEY
    assert not any("sk-wrong" in v for v in secondary.headers.values())
    assert failovers("ok") == ok_before + 1
    await leg.hangup()


async def test_secondary_down_too_plays_the_fallback(
        make_gateway: GatewayFactory, open_leg: LegFactory, redis_client: aioredis.Redis,
        rt_sim: RealtimeSimulator, rt_secondary: RealtimeSimulator) -> None:
    """Failover is tried before the spoken fallback, never instead of it."""
    gw = await make_gateway(gateway_model_reconnect_timeout_s=1.0, gateway_tool_end_grace_s=1.0,
                            **secondary_overrides(rt_secondary))
    leg = await open_leg(gw, 8000)
    call_id = leg.custom_data["cbCallId"]
    assert await leg.wait_agent_quiet(quiet_ms=500, timeout=20)
    failed_before = failovers("failed")
    rt_secondary.refuse_next(1000, code=1011)
    await rt_sim.stop()
    await wait_redis(lambda: redis_client.get(f"arq:job:{job_id(HANGUP_CALL, call_id)}"),
                     lambda v: v is not None, timeout=30, what="hang-up job")
    assert rt_secondary.sessions, "the secondary was never tried"
    assert failovers("failed") == failed_before + 1
    record = await wait_redis(lambda: redis_client.hgetall(redis_keys.session_record(call_id)),
                              lambda r: r.get(b"state") == b"ended", what="session ended")
    assert record[b"end_reason"] == b"model_failed"
    await leg.hangup()

"""Model socket faults (openai-realtime.md: drops without a close frame, session_expired):
reconnect, re-seed, hold sound meanwhile; a model that never comes back gets the spoken
fallback and a transfer or hang-up job (issue 9, scenario 4)."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from shared import redis_keys
from shared.jobs import HANGUP_CALL, TRANSFER_CALL, job_id
from shared.pcm import is_silent
from shared.profiles import AgentProfile, ProfileBook
from simulators.infobip import MediaLeg
from simulators.openai_realtime import RealtimeSimulator

pytest.register_assert_rewrite("tests.gateway_fixtures")
pytest_plugins = ["tests.gateway_fixtures"]  # rt_sim, make_gateway, open_leg

from tests.gateway_fixtures import (  # noqa: E402
    GatewayFactory,
    LegFactory,
    wait_redis,
)
from tests.waiting import wait_until  # noqa: E402

HOLD_LIMIT_MS = 1500


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
    gw = await make_gateway(hold_limit_ms=HOLD_LIMIT_MS)
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
    assert longest_silence_ms(leg, lost_at + 0.2, back_at) <= HOLD_LIMIT_MS
    if fault == "expire":
        assert rt_sim.sessions[0].expired
    await leg.hangup()


async def test_model_never_back_hangs_up_after_a_spoken_fallback(
        make_gateway: GatewayFactory, open_leg: LegFactory, redis_client: aioredis.Redis,
        rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway(model_reconnect_timeout_s=1.0, tool_end_grace_s=1.0)
    leg = await open_leg(gw, 8000)
    call_id = leg.custom_data["cbCallId"]
    assert await leg.wait_agent_quiet(quiet_ms=1000, timeout=20)
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


async def test_model_never_back_transfers_when_the_profile_can(
        make_gateway: GatewayFactory, open_leg: LegFactory, redis_client: aioredis.Redis,
        rt_sim: RealtimeSimulator) -> None:
    book = ProfileBook(profiles={"care": AgentProfile(transfer_number="+441134960000")},
                       routes={"default": "care"})
    await rt_sim.stop()  # no model at all from the start
    gw = await make_gateway(profiles=book, model_reconnect_timeout_s=1.0)
    leg = await open_leg(gw, 24000, profile="care")
    call_id = leg.custom_data["cbCallId"]
    await wait_redis(lambda: redis_client.get(f"arq:job:{job_id(TRANSFER_CALL, call_id)}"),
                     lambda v: v is not None, timeout=30, what="transfer job")
    assert not is_silent(leg.received_pcm()), "neither hold sound nor fallback was heard"
    await leg.hangup()


async def test_fatal_model_close_fails_fast(make_gateway: GatewayFactory, open_leg: LegFactory,
                                            redis_client: aioredis.Redis,
                                            rt_sim: RealtimeSimulator) -> None:
    """A wrong key closes with 3000: no retrying for MODEL_RECONNECT_TIMEOUT_S."""
    gw = await make_gateway(openai_api_key="sk-wrong", model_reconnect_timeout_s=30.0)
    leg = await open_leg(gw, 16000)
    call_id = leg.custom_data["cbCallId"]
    started = time.monotonic()
    await wait_redis(lambda: redis_client.get(f"arq:job:{job_id(HANGUP_CALL, call_id)}"),
                     lambda v: v is not None, timeout=20, what="hang-up job")
    assert time.monotonic() - started < 15
    assert len(rt_sim.sessions) == 1 and rt_sim.sessions[0].closed_code == 3000
    await wait_until(lambda: leg.frames, what="frames")
    await leg.hangup()

"""The gateway's half of re-bridging: a resumed call picks up its conversation, and a
gateway whose calls were re-bridged away (fenced) sends them nothing and writes nothing.

The orchestrator's half (detection, fence, new dialog) is
tests/orchestrator/test_orchestrator_rebridge.py; real processes through HAProxy are the
fault suite's 6a/6b.
"""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from callbridge.services.media_gateway import metrics
from callbridge.services.media_gateway.model_link import RESUME_INSTRUCTIONS
from callbridge.services.media_gateway.send_gate import STALL_HOLD_S
from callbridge.services.media_gateway.server import Gateway
from callbridge.shared import redis_keys
from callbridge.shared.pcm import is_silent
from callbridge.simulators.infobip import MediaLeg
from callbridge.simulators.openai_realtime import RealtimeSimulator
from tests.gateway.fixtures import GatewayFactory, LegFactory, issue_token, new_call_id, wait_redis
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

EARLIER = [("caller", "Where is my order 1234?"),
           ("agent", "Let me look that up for you, one moment."),
           ("caller", "It was meant to arrive on Monday.")]


async def _resumed_leg(gw: Gateway, redis: aioredis.Redis, call_id: str,
                       generation: int = 1) -> MediaLeg:
    """What Infobip opens for a re-bridged call: a new leg with a `resume` token for the
    call's new media generation, the conversation so far in the transcript stream."""
    for role, text in EARLIER:
        await redis.xadd(redis_keys.transcript_stream(call_id), {"role": role, "text": text})
    await redis.hset(redis_keys.call_record(call_id), mapping={"media_gen": generation})
    token = await issue_token(redis, call_id, generation=generation, resume=True)
    leg = MediaLeg(gw.url, 16000, {"cbToken": token, "cbCallId": call_id,
                                   "cbProfile": "default"}, autoplay=False)
    await leg.connect()
    return leg


async def test_a_resumed_call_reseeds_the_conversation_and_holds_until_the_agent_speaks(
        make_gateway: GatewayFactory, redis_client: aioredis.Redis,
        rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    call_id = new_call_id()
    resumed_before = metrics.RESUMED._value.get()
    leg = await _resumed_leg(gw, redis_client, call_id)
    try:
        session = (await rt_sim.wait_for_sessions(1))[0]
        await session.wait_for("response.created", timeout=15, direction="sent")
        assert await leg.wait_agent_audio(timeout=15)
        received = session.received
        texts = [e["item"]["content"][0]["text"] for e in received
                 if e["type"] == "conversation.item.create"]
        creates = [e for e in received if e["type"] == "response.create"]
        # The conversation so far, in order, before the one response that resumes it.
        assert texts == [text for _, text in EARLIER]
        kinds = [e["type"] for e in received]
        assert kinds.index("response.create") > kinds.index("conversation.item.create")
        assert len(creates) == 1
        instructions = creates[0]["response"]["instructions"]
        assert instructions.endswith(RESUME_INSTRUCTIONS)
        assert instructions != RESUME_INSTRUCTIONS  # the persona stays in force
        # No greeting: this caller was already greeted on the lost gateway.
        assert not any("How can I help you today" in t for t in texts)
        # The caller heard the hold sound from the first frame, not a silent line.
        first_frames = [f for _, f in leg.frames[:10]]
        assert first_frames and not any(is_silent(f) for f in first_frames)
        record = await wait_redis(
            lambda: redis_client.hgetall(redis_keys.session_record(call_id)),
            lambda r: r.get(b"first_audio_at"), what="session record")
        assert record[b"media_gen"] == b"1" and record[b"resumed_at"]
        assert metrics.RESUMED._value.get() == resumed_before + 1
    finally:
        await leg.hangup()


async def test_a_session_whose_call_moved_on_is_fenced_on_its_next_write(
        make_gateway: GatewayFactory, open_leg: LegFactory, redis_client: aioredis.Redis
        ) -> None:
    """A gateway cut off from Redis for a while (no stall): its next session-record write is
    refused by the generation check, and the session ends without touching the record that
    now belongs to the call's new gateway."""
    gw = await make_gateway()
    leg = await open_leg(gw, 16000)
    call_id = leg.custom_data["cbCallId"]
    assert await leg.wait_agent_audio(timeout=15)
    fenced_before = metrics.FENCED._value.get()
    # The orchestrator re-bridged the call; the new gateway owns the session record.
    await redis_client.hset(redis_keys.call_record(call_id), mapping={"media_gen": 1})
    await redis_client.hset(redis_keys.session_record(call_id),
                            mapping={"gateway_id": "gw-new", "state": "streaming"})
    assert await leg.wait_closed(10), "the fenced session kept its socket"
    await wait_until(lambda: not gw.sessions, 10, "the fenced session to end")
    record = await redis_client.hgetall(redis_keys.session_record(call_id))
    assert record[b"gateway_id"] == b"gw-new" and record[b"state"] == b"streaming"
    assert metrics.FENCED._value.get() == fenced_before + 1
    assert leg.close_code in (None, 1006)  # aborted: not even a close frame


async def test_after_a_stall_fenced_calls_get_no_frame_and_the_others_carry_on(
        make_gateway: GatewayFactory, open_leg: LegFactory, redis_client: aioredis.Redis
        ) -> None:
    """What a SIGSTOPped gateway does when it is resumed: the pacer finds the gap, holds
    every send, checks each call's generation, closes the re-bridged ones silently."""
    gw = await make_gateway()
    moved = await open_leg(gw, 16000)
    stays = await open_leg(gw, 16000)
    for leg in (moved, stays):
        assert await leg.wait_agent_audio(timeout=15)
    await redis_client.hset(redis_keys.call_record(moved.custom_data["cbCallId"]),
                            mapping={"media_gen": 1})
    gate = gw._hub.gate
    checks_before = gw.fences.checks
    session = next(s for s in gw.sessions if s.call_id == moved.custom_data["cbCallId"])
    sent_before_stall = session.output.frames_sent
    # The fault itself: the whole process stops (its event loop blocked, as SIGSTOP would
    # leave it) for longer than STALL_HOLD_S; every call's next frames are overdue after it.
    time.sleep(STALL_HOLD_S * 1.6)  # noqa: ASYNC251 - the fault: this loop stops
    await wait_until(lambda: gw.fences.checks > checks_before, 5, "the fence check")
    assert await moved.wait_closed(5)
    assert session.fenced
    assert session.output.frames_sent == sent_before_stall, "frames after the stall"
    assert not gate.held
    # The call that is still ours goes on: frames keep coming after the check.
    count = len(stays.frames)
    await wait_until(lambda: len(stays.frames) > count + 10, 5, "frames after the stall")
    assert not stays.closed
    await stays.hangup()

"""Tools and DTMF: hang_up / transfer_to_human become orchestrator jobs in arq's queue (read
directly from Redis: `arq:job:<id>` and the JOB_QUEUE zset); DTMF becomes a text item."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from arq.jobs import deserialize_job

from callbridge.services.media_gateway.server import Gateway
from callbridge.shared import redis_keys
from callbridge.shared.jobs import HANGUP_CALL, TRANSFER_CALL, job_id
from callbridge.shared.jobs import deserialize_job as shared_deserialize_job
from callbridge.shared.profiles import AgentProfile, ProfileBook
from callbridge.simulators import ASSETS_DIR
from callbridge.simulators.openai_realtime import GREETING, RealtimeSimulator, Reply
from tests.gateway.fixtures import (
    GatewayFactory,
    LegFactory,
    caller_speech,
    gateway_settings,
    wait_redis,
)

GOODBYE = "Thank you for calling. Goodbye!"


@asynccontextmanager
async def scripted(*replies: Reply) -> AsyncIterator[RealtimeSimulator]:
    sim = RealtimeSimulator(host="127.0.0.1", port=0, api_key="sk-sim", speed=4.0,
                            script=[GREETING, *replies])
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@asynccontextmanager
async def gateway(redis_url: str, sim: RealtimeSimulator, profiles: ProfileBook | None = None,
                  **overrides: object) -> AsyncIterator[Gateway]:
    gw = Gateway(gateway_settings(redis_url, sim, gateway_tool_end_grace_s=1.0, **overrides),
                 profiles=profiles)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def queued_job(redis: aioredis.Redis, jid: str) -> tuple[str, tuple[object, ...], float]:
    """(function, args, enqueue time in unix s) of a job arq holds, waited for (bounded)."""
    raw = await wait_redis(lambda: redis.get(f"arq:job:{jid}"), lambda v: v is not None,
                           timeout=30, what=f"arq job {jid}")
    assert await redis.zscore(redis_keys.JOB_QUEUE, jid) is not None, "not in the queue zset"
    job = deserialize_job(raw, deserializer=shared_deserialize_job)
    return job.function, tuple(job.args), job.enqueue_time.timestamp()


def _leg_call_id(leg: object) -> str:
    return str(leg.custom_data["cbCallId"])  # type: ignore[attr-defined]


async def test_hang_up_after_the_goodbye_was_heard(redis_url: str, redis_client: aioredis.Redis,
                                                   open_leg: LegFactory) -> None:
    reply = Reply(ASSETS_DIR / "agent_goodbye.wav", GOODBYE,
                  tool_call=("hang_up", {"reason": "caller is done"}))
    async with scripted(reply) as sim, gateway(redis_url, sim) as gw:
        leg = await open_leg(gw, 16000, caller_speech(16000))
        call_id = _leg_call_id(leg)
        function, args, enqueued_at = await queued_job(redis_client, job_id(HANGUP_CALL, call_id))
        assert (function, args) == (HANGUP_CALL, (call_id, "caller is done"))
        # The goodbye had been played out at the caller before the job was enqueued.
        assert leg.playout.voice_end > 0
        assert enqueued_at >= leg.playout.voice_end - 0.1, (enqueued_at, leg.playout.voice_end)
        session = sim.sessions[0]
        outputs = [e for e in session.received if e["type"] == "conversation.item.create"
                   and e["item"]["type"] == "function_call_output"]
        assert len(outputs) == 1
        assert session.received[-1]["type"] != "response.create"  # the agent is done
        # Nobody hung up the leg (no orchestrator here): the gateway closes it after the grace.
        assert await leg.wait_closed(10)
        record = await wait_redis(
            lambda: redis_client.hgetall(redis_keys.session_record(call_id)),
            lambda r: r.get(b"state") == b"ended", what="session ended")
        assert record[b"end_reason"] == b"agent_hangup"


async def test_transfer_to_human(redis_url: str, redis_client: aioredis.Redis,
                                 open_leg: LegFactory) -> None:
    book = ProfileBook(profiles={"sales": AgentProfile(transfer_number="+441134960000")},
                       routes={"default": "sales"})
    reply = Reply(ASSETS_DIR / "agent_hold.wav", "One moment please.",
                  tool_call=("transfer_to_human", {"reason": "wants a person"}))
    async with scripted(reply) as sim, gateway(redis_url, sim, book) as gw:
        leg = await open_leg(gw, 8000, caller_speech(8000), profile="sales")
        call_id = _leg_call_id(leg)
        function, args, _ = await queued_job(redis_client, job_id(TRANSFER_CALL, call_id))
        assert (function, args) == (TRANSFER_CALL, (call_id, "wants a person"))
        await leg.hangup()  # the orchestrator's transfer ends the media leg
        record = await wait_redis(
            lambda: redis_client.hgetall(redis_keys.session_record(call_id)),
            lambda r: r.get(b"state") == b"ended", what="session ended")
        assert record[b"end_reason"] == b"transferred"
        assert record[b"profile"] == b"sales"


async def test_transfer_without_a_number_tells_the_agent(
        redis_url: str, redis_client: aioredis.Redis, open_leg: LegFactory) -> None:
    reply = Reply(ASSETS_DIR / "agent_hold.wav", "One moment please.",
                  tool_call=("transfer_to_human", {"reason": "wants a person"}))
    async with scripted(reply, GREETING) as sim, gateway(redis_url, sim) as gw:
        leg = await open_leg(gw, 24000, caller_speech(24000))
        session = (await sim.wait_for_sessions(1))[0]
        output = await session.wait_for(
            lambda e: e["type"] == "conversation.item.create"
            and e["item"]["type"] == "function_call_output", timeout=30, direction="received")
        assert "No human agent" in output["item"]["output"]
        await session.wait_for("response.create", timeout=10, direction="received", nth=2)
        assert await redis_client.exists(f"arq:job:{job_id(TRANSFER_CALL, _leg_call_id(leg))}") \
            == 0
        await leg.hangup()


async def test_tools_of_a_cancelled_response_do_not_run(
        redis_url: str, redis_client: aioredis.Redis, open_leg: LegFactory) -> None:
    """The caller talks over the goodbye: the response is cancelled, so no hang-up."""
    reply = Reply(ASSETS_DIR / "agent_answer.wav", "long answer",
                  tool_call=("hang_up", {"reason": "done"}))
    async with scripted(reply) as sim, gateway(redis_url, sim) as gw:
        leg = await open_leg(gw, 16000, autoplay=False)
        assert await leg.wait_agent_quiet(quiet_ms=1000, timeout=20)
        speech = caller_speech(16000)
        await leg.play(speech)
        session = sim.sessions[0]
        await session.wait_for("response.created", timeout=20, direction="sent", nth=2)
        assert await leg.wait_agent_audio(timeout=10, after=time.time())
        await leg.play(speech[: 16000 * 2])  # interrupt the answer
        done = await session.wait_for("response.done", timeout=20, direction="sent", nth=2)
        assert done["response"]["status"] == "cancelled"
        await leg.hangup()
        assert await redis_client.exists(f"arq:job:{job_id(HANGUP_CALL, _leg_call_id(leg))}") \
            == 0


async def test_dtmf_becomes_a_conversation_item(make_gateway: GatewayFactory,
                                                open_leg: LegFactory,
                                                rt_sim: RealtimeSimulator) -> None:
    gw = await make_gateway()
    leg = await open_leg(gw, 16000, autoplay=False)
    assert await leg.wait_agent_quiet(quiet_ms=1000, timeout=20)
    await leg.send_dtmf("3")
    session = rt_sim.sessions[0]
    item = await session.wait_for("conversation.item.create", timeout=10, direction="received")
    assert item["item"]["role"] == "user"
    assert item["item"]["content"][0] == {
        "type": "input_text", "text": "The caller pressed 3 on the phone keypad."}
    await session.wait_for("response.create", timeout=10, direction="received", nth=2)
    asked_at = time.time()
    assert await leg.wait_agent_audio(timeout=15, after=asked_at - 0.5)
    await leg.hangup()

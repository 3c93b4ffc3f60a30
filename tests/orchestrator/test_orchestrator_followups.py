"""Follow-up events and gateway jobs: nobody is left on a silent line."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from callbridge.services.call_orchestrator import call_record
from callbridge.shared import redis_keys
from callbridge.simulators.infobip import CallScript, InfobipSimulator
from tests.orchestrator.fixtures import StreamIngress, created, orch_settings, running
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

PROFILES = """
[profiles.support]
instructions = "You are ACME support."
transfer_number = "+44 (113) 496-0000"

[routes]
default = "support"
"""


@pytest.fixture
async def sim_ingress(redis_url: str) -> AsyncIterator[tuple[InfobipSimulator, StreamIngress]]:
    ingress = StreamIngress(redis_url)
    await ingress.start()
    sim = InfobipSimulator(webhook_url=ingress.url)
    await sim.start()
    try:
        yield sim, ingress
    finally:
        await sim.stop()
        await ingress.stop()


def hangups(sim: InfobipSimulator, call_id: str) -> list[Any]:
    return [r for r in sim.requests
            if r.method == "POST" and r.path == f"/calls/1/calls/{call_id}/hangup"]


async def test_dialog_failed_hangs_up_the_caller(
        sim_ingress: tuple[InfobipSimulator, StreamIngress], redis_url: str,
        redis_client: aioredis.Redis) -> None:
    sim, _ = sim_ingress
    # Nothing listens there: the media WebSocket fails, the platform sends DIALOG_FAILED.
    cfg = sim.add_media_stream_config(url="ws://127.0.0.1:9/media", sample_rate=24000)
    async with running(orch_settings(redis_url, sim.base_url, cfg)):
        call = await sim.place_call(CallScript(caller_wav=None, max_duration_s=30))
        await wait_until(lambda: hangups(sim, call.call_id), what="parent hangup")
        await call.wait_finished(timeout=20)

        async def ended() -> dict[str, str] | None:
            rec = await call_record.load(redis_client, call.call_id)
            return rec if rec.get("state") == "ended" else None

        rec = await wait_until(ended, what="call record ended")
    assert hangups(sim, call.call_id)[0].json == {"errorCode": "NORMAL_HANGUP"}
    assert call.end_reason == "dialog_failed"
    # Never answered (the media leg failed first): the platform reports it CANCELLED.
    assert rec["end_reason"] in ("CANCELLED", "NORMAL_HANGUP") and rec["ended_at"]


async def test_dialog_failed_transfers_when_profile_has_a_number(
        sim_ingress: tuple[InfobipSimulator, StreamIngress], redis_url: str,
        redis_client: aioredis.Redis, tmp_path: Path) -> None:
    sim, _ = sim_ingress
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(PROFILES)
    cfg = sim.add_media_stream_config(url="ws://127.0.0.1:9/media", sample_rate=24000)
    settings = orch_settings(redis_url, sim.base_url, cfg, agent_profiles_file=str(profiles))
    async with running(settings):
        call = await sim.place_call(CallScript(caller_wav=None, max_duration_s=30,
                                               transfer_talk_s=0.5))

        def phone_dialog() -> list[Any]:
            return [r for r in created(sim, call.call_id)
                    if r.json["childCallRequest"]["endpoint"]["type"] == "PHONE"]

        posts = await wait_until(phone_dialog, what="transfer dialog")
        await call.wait_finished(timeout=20)

        async def transferred() -> dict[str, str] | None:
            rec = await call_record.load(redis_client, call.call_id)
            return rec if rec.get("transfer_dialog_id") else None

        rec = await wait_until(transferred, what="transfer recorded")
    # The wire body as the spec writes it: digits only, the caller ID the number the caller
    # dialled (CALL_RECEIVED's call.to), ringback for the caller while the human's phone
    # rings (this caller was never answered: the media leg failed, so the parent call is
    # still CALLING, where the spec applies ringbackGeneration).
    assert posts[0].json == {
        "parentCallId": call.call_id,
        "childCallRequest": {"endpoint": {"type": "PHONE", "phoneNumber": "441134960000"},
                             "from": call.script.to_number},
        "propagationOptions": {"ringbackGeneration": {"enabled": True}}}
    assert call.script.to_number == "442035550100"
    assert posts[0].status == 201 and sim.invalid_requests == []  # the spec accepted it
    assert rec["called_number"] == "442035550100"
    assert rec["profile"] == "support" and rec["transfer_pending"] == "1"
    assert rec["transfer_number"] == "441134960000"
    assert len(phone_dialog()) == 1
    assert not hangups(sim, call.call_id)  # transferred, not hung up by us


async def test_with_re_bridging_off_a_lost_gateways_callers_are_hung_up(
        sim_ingress: tuple[InfobipSimulator, StreamIngress], redis_url: str,
        redis_client: aioredis.Redis) -> None:
    """ORCHESTRATOR_MAX_REBRIDGES=0: a lost gateway's caller is freed as before re-bridging
    existed (tests/orchestrator/test_orchestrator_rebridge.py has the re-bridge itself)."""
    sim, _ = sim_ingress
    cfg = sim.add_media_stream_config(url="ws://127.0.0.1:9/media", sample_rate=24000)
    settings = orch_settings(redis_url, sim.base_url, cfg, orchestrator_max_rebridges=0)

    async def alive_heartbeat() -> None:  # a healthy gateway's heartbeat keeps changing
        for seq in range(10_000):
            await redis_client.set(redis_keys.gateway_heartbeat("gw-alive"), str(seq), ex=30)
            await asyncio.sleep(0.1)
    beating = asyncio.create_task(alive_heartbeat())
    try:
        async with running(settings):
            call = await sim.place_call(CallScript(caller_wav=None, connect_to_media=False,
                                                   hangup_after_s=30))
            await wait_until(lambda: created(sim, call.call_id), what="bridged")
            # A gateway that served this call and then crashed: sessions listed, no heartbeat.
            await redis_client.sadd(redis_keys.GATEWAYS, "gw-alive", "gw-dead")
            await redis_client.sadd(redis_keys.gateway_sessions("gw-alive"), "other-call")
            await redis_client.hset(redis_keys.session_record(call.call_id),
                                    mapping={"call_id": call.call_id, "gateway_id": "gw-dead",
                                             "state": "streaming"})
            await redis_client.sadd(redis_keys.gateway_sessions("gw-dead"), call.call_id)
            await wait_until(lambda: hangups(sim, call.call_id), what="hangup of lost caller")
            await call.wait_finished(timeout=20)
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
    session = {k.decode(): v.decode() for k, v in
               (await redis_client.hgetall(redis_keys.session_record(call.call_id))).items()}
    assert session["state"] == "ended" and session["end_reason"] == "gateway_lost"
    assert await redis_client.ttl(redis_keys.session_record(call.call_id)) > 0
    assert not await redis_client.smembers(redis_keys.gateway_sessions("gw-dead"))
    # The live gateway's sessions are not disturbed.
    assert await redis_client.smembers(redis_keys.gateway_sessions("gw-alive")) == {
        b"other-call"}
    assert call.end_reason == "api_hangup"


async def test_gateway_hangup_job_is_served(
        sim_ingress: tuple[InfobipSimulator, StreamIngress], redis_url: str) -> None:
    """The gateway enqueues `hangup_call` by the contract (its own arq client)."""
    from arq.connections import RedisSettings, create_pool

    from callbridge.shared.jobs import ARQ_SERIALIZERS, HANGUP_CALL, job_id

    sim, _ = sim_ingress
    cfg = sim.add_media_stream_config(url="ws://127.0.0.1:9/media", sample_rate=24000)
    async with running(orch_settings(redis_url, sim.base_url, cfg)):
        call = await sim.place_call(CallScript(caller_wav=None, connect_to_media=False,
                                               hangup_after_s=30))
        await wait_until(lambda: created(sim, call.call_id), what="bridged")
        pool = await create_pool(RedisSettings.from_dsn(redis_url), **ARQ_SERIALIZERS)
        try:
            await pool.enqueue_job(HANGUP_CALL, call.call_id, "agent_hangup",
                                   _job_id=job_id(HANGUP_CALL, call.call_id),
                                   _queue_name=redis_keys.JOB_QUEUE)
        finally:
            await pool.aclose()
        await wait_until(lambda: hangups(sim, call.call_id), what="hangup")
        await call.wait_finished(timeout=20)
    assert call.end_reason == "api_hangup"

"""CALL_RECEIVED -> exactly one dialog, against the Infobip simulator, with injected faults."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from callbridge.services.call_orchestrator import call_record
from callbridge.shared import redis_keys
from tests.orchestrator.fixtures import (
    created,
    dialog_posts,
    quiet_call,
    running,
    sim_stack,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def stack(redis_url: str) -> AsyncIterator[dict[str, Any]]:
    async with sim_stack(redis_url) as parts:
        yield parts



async def dead_letters(redis: aioredis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in await redis.xrange(redis_keys.DEAD_LETTER_STREAM)]


async def test_dialog_body_and_media_token(stack: dict[str, Any],
                                           redis_client: aioredis.Redis) -> None:
    sim = stack["sim"]
    async with running(stack["settings"]):
        call = await sim.place_call(quiet_call())
        await wait_until(lambda: created(sim, call.call_id), what="dialog created")
        req = created(sim, call.call_id)[0]
        token = req.json["childCallRequest"]["customData"]["cbToken"]
        assert req.headers["Authorization"] == "App sim-infobip-key"
        assert req.json == {
            "parentCallId": call.call_id,
            "childCallRequest": {
                "endpoint": {"type": "WEBSOCKET", "websocketEndpointConfigId": stack["cfg"],
                             "identifier": call.call_id},
                "customData": {"cbToken": token, "cbCallId": call.call_id,
                               "cbProfile": "default"}},
            "propagationOptions": {"childCallHangup": False},
        }
        raw = await redis_client.get(redis_keys.media_token(token))
        stored = orjson.loads(raw)
        assert stored["call_id"] == call.call_id and stored["profile"] == "default"
        assert stored["expires_at"] > time.time()
        assert 0 < await redis_client.ttl(redis_keys.media_token(token)) <= 120

        async def recorded() -> dict[str, str] | None:
            rec = await call_record.load(redis_client, call.call_id)
            return rec if rec.get("state") in ("dialog_established", "established") else None

        rec = await wait_until(recorded, what="call record established")
        assert rec["dialog_id"] == call.dialog_id
        for field in ("received_at", "dialog_requested_at", "dialog_created_at", "profile",
                      "api_base_url", "child_call_id"):
            assert rec.get(field), field


async def test_duplicate_call_received_x3_one_dialog(stack: dict[str, Any],
                                                     redis_client: aioredis.Redis) -> None:
    sim, ingress = stack["sim"], stack["ingress"]
    async with running(stack["settings"]):
        call = await sim.place_call(quiet_call())
        await wait_until(lambda: created(sim, call.call_id), what="dialog")
        body = orjson.dumps(call.events_of("CALL_RECEIVED")[0])
        # Infobip re-delivers the same webhook twice more.
        import aiohttp

        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.post(ingress.url, data=body) as resp:
                    assert resp.status == 200
        await wait_until(lambda: ingress.received >= 3 + 2, what="events stored")

        async def all_acked() -> bool:
            groups = await redis_client.xinfo_groups(redis_keys.EVENTS_STREAM)
            return all(g["pending"] == 0 and g["lag"] == 0 for g in groups)

        await wait_until(all_acked, what="stream drained")
    assert len(dialog_posts(sim, call.call_id)) == 1


async def test_500_then_success_retries(stack: dict[str, Any]) -> None:
    sim = stack["sim"]
    sim.faults.fail_next(1, status=500)
    async with running(stack["settings"]):
        call = await sim.place_call(quiet_call())
        await wait_until(lambda: created(sim, call.call_id), what="dialog after retry")
    posts = dialog_posts(sim, call.call_id)
    assert [r.status for r in posts] == [500, 201]


async def test_429_retry_after_is_honoured(stack: dict[str, Any]) -> None:
    sim = stack["sim"]
    sim.faults.fail_next(1, status=429, retry_after=1.0)
    async with running(stack["settings"]):
        call = await sim.place_call(quiet_call())
        await wait_until(lambda: created(sim, call.call_id), what="dialog after 429")
    first, second = dialog_posts(sim, call.call_id)
    assert first.status == 429 and second.status == 201
    assert second.at - first.at >= 1.0 - 0.02
    assert not sim.faults.early_retries


async def test_400_dead_letters_without_retry(stack: dict[str, Any],
                                              redis_client: aioredis.Redis) -> None:
    sim = stack["sim"]
    sim.faults.fail_next(1, status=400)
    async with running(stack["settings"]):
        call = await sim.place_call(quiet_call())
        letters = await wait_until(lambda: dead_letters(redis_client), what="dead letter")
        # The caller is not left ringing: the fallback hangs them up.
        await wait_until(lambda: call.state in ("CANCELLED", "FINISHED"), what="caller freed")
    assert len(dialog_posts(sim, call.call_id)) == 1
    letter = letters[0]
    assert letter["job"] == "handle_event" and letter["call_id"] == call.call_id
    assert letter["attempts"] == "1"
    assert "HTTP 400 BAD_REQUEST" in letter["error"]
    assert orjson.loads(letter["event"])["type"] == "CALL_RECEIVED"
    assert letter["stream_id"] and letter["at"]


async def test_timeout_is_retried_without_duplicate(stack: dict[str, Any],
                                                    redis_client: aioredis.Redis) -> None:
    sim = stack["sim"]
    # Slower than the 1 s client timeout; the simulator still applies it after 1.5 s.
    sim.faults.delay_next(1, 1.5)
    async with running(stack["settings"]):
        call = await sim.place_call(quiet_call())
        await wait_until(lambda: created(sim, call.call_id), what="delayed dialog")

        async def settled() -> bool:
            rec = await call_record.load(redis_client, call.call_id)
            queued = await redis_client.zcard(redis_keys.JOB_QUEUE)
            return rec.get("dialog_id") == call.dialog_id and queued == 0

        await wait_until(settled, what="the retry to finish")
    # The retry found the dialog the slow request created (recorded from its
    # DIALOG_ESTABLISHED event, or by asking the Calls API) instead of posting again.
    assert len(dialog_posts(sim, call.call_id)) == 1
    assert len(call.dialogs) == 1


async def test_unknown_event_type_is_acknowledged(stack: dict[str, Any],
                                                  redis_client: aioredis.Redis) -> None:
    from tests.orchestrator.fixtures import make_event, xadd_event

    async with running(stack["settings"]):
        await xadd_event(redis_client, make_event("CONFERENCE_CREATED", "c-x"))

        async def acked() -> bool:
            groups = await redis_client.xinfo_groups(redis_keys.EVENTS_STREAM)
            return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0

        await wait_until(acked, what="ack")
    assert await redis_client.xlen(redis_keys.DEAD_LETTER_STREAM) == 0


async def test_429_retry_after_holds_every_dialog_request(stack: dict[str, Any]) -> None:
    """The throttle is per account: after a 429 no process creates any dialog early."""
    sim = stack["sim"]
    sim.faults.fail_next(1, status=429, retry_after=1.0)
    async with running(stack["settings"], "a"), running(stack["settings"], "b"):
        first = await sim.place_call(quiet_call())
        await wait_until(lambda: dialog_posts(sim, first.call_id), what="429 answered")
        others = [await sim.place_call(quiet_call()) for _ in range(3)]
        for call in [first, *others]:
            await wait_until(lambda c=call: created(sim, c.call_id), what="bridged")
    assert not sim.faults.early_retries
    throttled_at = dialog_posts(sim, first.call_id)[0].at
    for call in others:
        assert created(sim, call.call_id)[0].at >= throttled_at + 1.0 - 0.02

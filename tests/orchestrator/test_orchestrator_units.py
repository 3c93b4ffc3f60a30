"""Pure and Redis-level pieces of the orchestrator: retry policy, ids, claims, records."""

from __future__ import annotations

import random

import pytest
import redis.asyncio as aioredis

from callbridge.services.call_orchestrator import call_record
from callbridge.services.call_orchestrator.calls_api import ApiError, parse_retry_after
from callbridge.services.call_orchestrator.idempotency import Claim, event_job_id
from callbridge.services.call_orchestrator.replay import parse_duration, parse_time
from callbridge.services.call_orchestrator.retry import RETRY_AFTER_MARGIN_S, RetryPolicy
from callbridge.services.call_orchestrator.throttle import ThrottleGate
from callbridge.shared import redis_keys


def test_backoff_is_full_jitter_capped() -> None:
    policy = RetryPolicy(base_s=0.5, cap_s=4.0, max_attempts=5)
    rng = random.Random(1)
    for attempt in range(1, 10):
        ceiling = min(4.0, 0.5 * 2 ** (attempt - 1))
        samples = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # spread over the whole range


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(base_s=0.01, cap_s=0.02)
    for _ in range(50):
        assert policy.delay(1, retry_after=2.0) >= 2.0 + RETRY_AFTER_MARGIN_S
    assert policy.exhausted(5) is False
    assert RetryPolicy(max_attempts=3).exhausted(3)


def test_parse_retry_after_and_classification() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after(None) is None
    assert ApiError("x", 500, "GENERAL_ERROR", "", None).retryable
    assert ApiError("x", 429, "TOO_MANY_REQUESTS", "", 1.0).retryable
    assert not ApiError("x", 429, "TOO_MANY_REQUESTS", "", 1.0).ambiguous
    assert not ApiError("x", 400, "BAD_REQUEST", "", None).retryable
    assert not ApiError("x", 404, "NOT_FOUND", "", None).retryable


def test_event_job_id_is_deterministic() -> None:
    body = b'{"type":"CALL_RECEIVED","callId":"c1"}'
    a = event_job_id("CALL_RECEIVED", "c1", body)
    assert a == event_job_id("CALL_RECEIVED", "c1", body)
    assert a.startswith("handle_event:CALL_RECEIVED:c1:")
    assert a != event_job_id("CALL_RECEIVED", "c1", body + b" ")


def test_time_parsing() -> None:
    assert parse_duration("15m") == 900
    assert parse_duration("7d") == 7 * 86400
    assert parse_time("15m", now=10_000.0) == 10_000.0 - 900
    assert parse_time("2026-01-15T12:00:00Z") == parse_time("2026-01-15T12:00:00+00:00")
    with pytest.raises(ValueError):
        parse_time("yesterday-ish")


async def test_claim_acquire_held_stale(redis_client: aioredis.Redis) -> None:
    key = redis_keys.dialog_claim("c1")
    first = Claim(redis_client, key, "job-a")
    assert (await first.acquire(lease_s=30)).outcome == "acquired"
    second = Claim(redis_client, key, "job-b")
    held = await second.acquire(lease_s=30)
    assert held.outcome == "held" and 25 < held.held_for_s() <= 30
    # An ambiguous failure cuts the lease: the next claimer takes over and must resolve.
    assert await first.mark_uncertain(0.0)
    assert (await second.acquire(lease_s=30)).outcome == "stale"
    # Only the owner may release.
    assert not await first.release()
    assert await second.release()
    assert await redis_client.get(key) is None
    assert await redis_client.ttl(key) == -2


async def test_claim_lease_expiry_allows_takeover(redis_client: aioredis.Redis) -> None:
    key = redis_keys.dialog_claim("c2")
    assert (await Claim(redis_client, key, "dead").acquire(lease_s=0)).outcome == "acquired"
    result = await Claim(redis_client, key, "alive").acquire(lease_s=30)
    assert result.outcome == "stale" and result.previous is not None
    assert 0 < await redis_client.ttl(key) <= redis_keys.CALL_TTL_S


async def test_call_record_moves_forward_only(redis_client: aioredis.Redis) -> None:
    await call_record.update(redis_client, "c1", "dialog_created", dialog_id="d1")
    await call_record.update(redis_client, "c1", "dialog_requested", dialog_requested_at="5")
    rec = await call_record.load(redis_client, "c1")
    assert rec["state"] == "dialog_created" and rec["dialog_requested_at"] == "5"
    assert await call_record.mark_ended(redis_client, "c1", "NORMAL_HANGUP")
    assert not await call_record.mark_ended(redis_client, "c1", "other")
    assert not await call_record.update(redis_client, "c1", "dialog_established")
    rec = await call_record.load(redis_client, "c1")
    assert rec["state"] == "ended" and rec["end_reason"] == "NORMAL_HANGUP"
    assert await redis_client.ttl(redis_keys.call_record("c1")) > 0
    # must_exist: follow-ups about unknown calls (child legs) create nothing.
    assert not await call_record.update(redis_client, "child", "established",
                                        must_exist=True, established_at="1")
    assert not await redis_client.exists(redis_keys.call_record("child"))


async def test_throttle_gate_is_shared(redis_client: aioredis.Redis) -> None:
    a, b = ThrottleGate(redis_client), ThrottleGate(redis_client)
    assert await a.wait_s("dialogs") == 0
    await a.close_for("dialogs", 2.0)
    assert 1.5 < await b.wait_s("dialogs") <= 2.0
    await b.close_for("dialogs", 0.5)  # never shortens
    assert await a.wait_s("dialogs") > 1.0

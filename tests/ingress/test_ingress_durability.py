"""Never acknowledge what Redis did not store: Redis killed mid-load and restarted from its
AOF, Redis down, slow, or out of memory -> 503 with Retry-After, never 500; and the
coalescing appender really batches (asserted on its own counters, not on timing)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from callbridge.services.webhook_ingress.app import redis_client as make_redis
from callbridge.services.webhook_ingress.appender import AppendFailed, StreamAppender, Trim
from callbridge.shared import redis_keys
from callbridge.shared.redis_server import RedisServer, free_port
from tests.ingress.fixtures import JSON, event, ingress_client, make_settings, state_of


async def stored_call_ids(url: str) -> set[bytes]:
    client = aioredis.Redis.from_url(url)
    try:
        return {f[b"call_id"] for _i, f in await client.xrange(redis_keys.EVENTS_STREAM)}
    finally:
        await client.aclose()


async def test_redis_killed_mid_load_every_200_is_stored(restartable_redis: RedisServer) -> None:
    """Scenario 1 in miniature: SIGKILL Redis (AOF, fsync always) under concurrent load,
    restart it, keep going; every 200 is in the stream, outage answers are 503 + Retry-After."""
    settings = make_settings(restartable_redis.url, ingress_append_timeout_s=2.0)
    results: dict[str, int] = {}
    retry_after_missing = 0
    phase = {"name": "before"}
    counts = {"before_ok": 0, "outage_503": 0, "after_ok": 0}
    done = asyncio.Event()

    async with ingress_client(settings) as client:
        async def worker(index: int) -> None:
            nonlocal retry_after_missing
            for n in range(400):  # bounded per worker
                if done.is_set():
                    return
                call_id = f"w{index}-{n}"
                try:
                    resp = await client.post("/webhook", data=event(call_id), headers=JSON)
                except aiohttp.ClientError:
                    continue
                results[call_id] = resp.status
                if resp.status == 503:
                    retry_after_missing += "Retry-After" not in resp.headers
                    if phase["name"] == "outage":
                        counts["outage_503"] += 1
                elif resp.status == 200:
                    key = "after_ok" if phase["name"] == "after" else "before_ok"
                    counts[key] += 1

        async def until(check: Any, timeout: float = 60.0) -> None:
            deadline = time.monotonic() + timeout
            while not check():
                assert time.monotonic() < deadline, f"stuck: {counts}"
                await asyncio.sleep(0.01)

        workers = [asyncio.create_task(worker(i)) for i in range(24)]
        try:
            await until(lambda: counts["before_ok"] >= 150)
            phase["name"] = "outage"
            await asyncio.to_thread(restartable_redis.kill)
            await until(lambda: counts["outage_503"] >= 30)
            await asyncio.to_thread(restartable_redis.start)
            phase["name"] = "after"
            await until(lambda: counts["after_ok"] >= 150)
        finally:
            done.set()
            await asyncio.gather(*workers)

    statuses = set(results.values())
    assert statuses <= {200, 503}, statuses  # never a 500
    assert retry_after_missing == 0
    acknowledged = {cid.encode() for cid, status in results.items() if status == 200}
    missing = acknowledged - await stored_call_ids(restartable_redis.url)
    assert not missing, f"{len(missing)} acknowledged events lost: {sorted(missing)[:5]}"


async def test_readyz_follows_redis(restartable_redis: RedisServer) -> None:
    async with ingress_client(make_settings(restartable_redis.url)) as client:
        assert (await client.get("/readyz")).status == 200
        await asyncio.to_thread(restartable_redis.stop)
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert (await resp.json())["reason"] == "redis_unreachable"
        # Liveness is not readiness: the process itself is fine.
        assert (await client.get("/healthz")).status == 200
        resp = await client.post("/webhook", data=event("c-down"), headers=JSON)
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        assert (await resp.json())["error"] == "storage_unavailable"
        await asyncio.to_thread(restartable_redis.start)
        assert (await client.get("/readyz")).status == 200
        assert (await client.post("/webhook", data=event("c-up"), headers=JSON)).status == 200
    assert await stored_call_ids(restartable_redis.url) == {b"c-up"}


async def test_slow_redis_answers_503_after_the_bound(redis_url: str,
                                                      redis_client: aioredis.Redis) -> None:
    settings = make_settings(redis_url, ingress_append_timeout_s=0.3, ingress_retry_after_s=2)
    async with ingress_client(settings) as client:
        await redis_client.execute_command("CLIENT", "PAUSE", "2000", "WRITE")
        resp = await client.post("/webhook", data=event("c-slow"), headers=JSON)
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "2"
        assert "timeout" in (await resp.json())["detail"]
        await redis_client.execute_command("CLIENT", "UNPAUSE")
        assert (await client.post("/webhook", data=event("c-ok"), headers=JSON)).status == 200
    # The timed-out entry may or may not have landed (a duplicate, never a loss).
    assert b"c-ok" in await stored_call_ids(redis_url)


async def test_redis_out_of_memory_answers_503(restartable_redis: RedisServer) -> None:
    """Scenario 8: at maxmemory (noeviction) Redis refuses the XADD; nothing is acknowledged."""
    admin = aioredis.Redis.from_url(restartable_redis.url)
    try:
        async with ingress_client(make_settings(restartable_redis.url)) as client:
            assert (await client.post("/webhook", data=event("c-1"), headers=JSON)).status == 200
            await admin.config_set("maxmemory-policy", "noeviction")
            await admin.config_set("maxmemory", "1")
            resp = await client.post("/webhook", data=event("c-oom"), headers=JSON)
            assert resp.status == 503
            assert "Retry-After" in resp.headers
            await admin.config_set("maxmemory", "0")
            assert (await client.post("/webhook", data=event("c-2"), headers=JSON)).status == 200
    finally:
        await admin.aclose()
    assert await stored_call_ids(restartable_redis.url) == {b"c-1", b"c-2"}


async def test_concurrent_requests_are_coalesced(redis_url: str,
                                                 redis_client: aioredis.Redis) -> None:
    async with ingress_client(make_settings(redis_url)) as client:
        responses = await asyncio.gather(*(
            client.post("/webhook", data=event(f"c-{i}"), headers=JSON) for i in range(200)))
        assert {r.status for r in responses} == {200}
        stats = state_of(client).appender.stats  # type: ignore[union-attr]
        assert stats.entries == 200
        assert stats.max_batch > 1 and stats.flushes < 200
        metrics = await (await client.get("/metrics")).text()
    assert "callbridge_ingress_xadd_batch_size_count" in metrics
    assert await redis_client.xlen(redis_keys.EVENTS_STREAM) == 200


async def test_no_coalesce_mode_is_one_xadd_per_request(redis_url: str) -> None:
    async with ingress_client(make_settings(redis_url, ingress_coalesce=False)) as client:
        responses = await asyncio.gather(*(
            client.post("/webhook", data=event(f"c-{i}"), headers=JSON) for i in range(50)))
        assert {r.status for r in responses} == {200}
        stats = state_of(client).appender.stats  # type: ignore[union-attr]
        assert stats.flushes == stats.entries == 50 and stats.max_batch == 1
    assert len(await stored_call_ids(redis_url)) == 50


# The appender on its own ---------------------------------------------------------------

async def test_appends_queued_in_one_turn_go_in_one_pipeline(redis_url: str) -> None:
    settings = make_settings(redis_url)
    client = make_redis(settings)
    appender = StreamAppender(client)
    try:
        ids = await asyncio.gather(*(
            appender.append("s", {"n": str(i)}, Trim(maxlen=1000)) for i in range(50)))
        assert len(set(ids)) == 50
        assert (appender.stats.flushes, appender.stats.max_batch) == (1, 50)
        # Each caller got *its own* entry id.
        for i, entry_id in enumerate(ids):
            [(_, fields)] = await client.xrange("s", entry_id, entry_id)
            assert fields[b"n"] == str(i).encode()
    finally:
        await appender.aclose()
        await client.aclose()


async def test_a_failed_flush_fails_every_append_in_it() -> None:
    settings = make_settings(f"redis://127.0.0.1:{free_port()}/0")  # nobody listens
    client = make_redis(settings)
    appender = StreamAppender(client, timeout_s=2.0)
    try:
        results = await asyncio.gather(*(
            appender.append("s", {"n": "1"}, Trim()) for _ in range(10)),
            return_exceptions=True)
        assert all(isinstance(r, AppendFailed) and r.reason == "redis_unavailable"
                   for r in results)
        assert appender.stats.failed_flushes == 1 and appender.stats.failed_entries == 10
        # Best effort never raises, even now.
        assert appender.append_nowait("s", {"n": "2"}, Trim()) is True
    finally:
        await appender.aclose()
        await client.aclose()
    await asyncio.sleep(0)


async def test_age_trimming_uses_minid(redis_url: str, redis_client: aioredis.Redis) -> None:
    kwargs = Trim(maxlen=100, max_age_ms=60_000).xadd_kwargs()
    assert set(kwargs) == {"minid", "approximate"}
    settings = make_settings(redis_url, events_max_age_s=3600)
    async with ingress_client(settings) as client:
        assert (await client.post("/webhook", data=event("c-1"), headers=JSON)).status == 200
    assert await redis_client.xlen(redis_keys.EVENTS_STREAM) == 1

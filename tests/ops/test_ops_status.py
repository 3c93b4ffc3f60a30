"""`callbridge status` and `calls show` read the records the services write."""

from __future__ import annotations

import time

import orjson
import redis.asyncio as aioredis

from callbridge.services.ops.status import collect_call, collect_status, render_call, render_status
from callbridge.shared import redis_keys


async def test_status_shows_live_calls_gateways_and_backlog(redis_client: aioredis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    await redis_client.sadd(redis_keys.GATEWAYS, "gw-a", "gw-dead")
    await redis_client.set(redis_keys.gateway_heartbeat("gw-a"), orjson.dumps(
        {"sessions": 1, "max_sessions": 250, "ready": True, "pid": 1, "at": now_ms - 1500}))
    await redis_client.sadd(redis_keys.gateway_sessions("gw-a"), "call-1")
    await redis_client.hset(redis_keys.session_record("call-1"), mapping={
        "state": "streaming", "started_at": now_ms - 12_000, "profile": "default"})
    await redis_client.xadd(redis_keys.EVENTS_STREAM,
                            {"type": "CALL_RECEIVED", "call_id": "call-1"})
    await redis_client.xadd(redis_keys.DEAD_LETTER_STREAM, {"job": "x"})

    status = await collect_status(redis_client)
    (call,) = status["calls"]
    assert call["call_id"] == "call-1" and call["gateway"] == "gw-a"
    assert 11 < call["duration_s"] < 60
    gateways = {g["gateway"]: g for g in status["gateways"]}
    assert gateways["gw-a"]["alive"] and 1.0 <= gateways["gw-a"]["heartbeat_age_s"] < 30
    assert not gateways["gw-dead"]["alive"]
    assert status["events_stream"]["length"] == 1 and status["dead_letters"] == 1
    text = render_status(status)
    assert "call-1" in text and "NO HEARTBEAT" in text


async def test_calls_show_collects_one_call(redis_client: aioredis.Redis) -> None:
    await redis_client.xadd(redis_keys.EVENTS_STREAM, {"type": "CALL_RECEIVED", "call_id": "c-9"})
    await redis_client.xadd(redis_keys.EVENTS_STREAM, {"type": "CALL_RECEIVED", "call_id": "other"})
    await redis_client.hset(redis_keys.call_record("c-9"), mapping={"state": "ended"})
    await redis_client.xadd(redis_keys.transcript_stream("c-9"),
                            {"role": "agent", "text": "hello", "at": 1})
    info = await collect_call(redis_client, "c-9")
    assert [e["type"] for e in info["events"]] == ["CALL_RECEIVED"]
    assert info["call"] == {"state": "ended"}
    assert info["transcript"][0]["text"] == "hello"
    assert "agent: hello" in render_call(info)


async def _command_calls(client: aioredis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_calls_show_is_bounded_and_says_so(redis_client: aioredis.Redis) -> None:
    body = b'{"type":"CALL_RECEIVED","callId":"old-call"}'
    await redis_client.xadd(redis_keys.EVENTS_STREAM,
                            {"type": "CALL_RECEIVED", "call_id": "old-call", "body": body})
    pipe = redis_client.pipeline(transaction=False)
    for i in range(2500):
        pipe.xadd(redis_keys.EVENTS_STREAM, {"type": "LOAD_PROBE", "call_id": f"n-{i}"})
    await pipe.execute()
    keys_before = await _command_calls(redis_client, "keys")
    scan_before = await _command_calls(redis_client, "scan")

    bounded = await collect_call(redis_client, "old-call", scan_limit=1000)
    assert bounded["events"] == [] and bounded["events_scanned"] == 1000
    assert bounded["events_truncated"] is True
    assert "--scan N" in render_call(bounded)

    # Raised bound: found, in bounded pages; its job found by its deterministic id.
    from arq.constants import job_key_prefix, result_key_prefix

    from callbridge.services.call_orchestrator.idempotency import event_job_id
    await redis_client.set(job_key_prefix + event_job_id("CALL_RECEIVED", "old-call", body), b"x")
    await redis_client.set(result_key_prefix + "hangup_call:old-call", b"x")
    await redis_client.set(job_key_prefix + "hangup_call:old-call-2", b"x")  # another call
    full = await collect_call(redis_client, "old-call", scan_limit=5000)
    assert [e["type"] for e in full["events"]] == ["CALL_RECEIVED"]
    assert full["events_scanned"] == 2501 and full["events_truncated"] is False
    assert full["jobs"] == sorted([
        job_key_prefix + event_job_id("CALL_RECEIVED", "old-call", body),
        result_key_prefix + "hangup_call:old-call"])
    assert "--scan N" not in render_call(full)
    # Never a keyspace walk.
    assert await _command_calls(redis_client, "keys") == keys_before
    assert await _command_calls(redis_client, "scan") == scan_before

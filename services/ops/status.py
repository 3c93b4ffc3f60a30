"""`callbridge status` and `callbridge calls show`: what on-call needs, read from Redis only."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared import redis_keys


def _s(value: bytes | None) -> str:
    return value.decode(errors="replace") if value is not None else ""


def _decode(mapping: dict[bytes, bytes]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in mapping.items()}


async def collect_status(client: aioredis.Redis) -> dict[str, Any]:
    now_ms = time.time() * 1000
    gateways, calls = [], []
    for raw_id in sorted(await client.smembers(redis_keys.GATEWAYS)):
        gateway_id = _s(raw_id)
        beat_raw = await client.get(redis_keys.gateway_heartbeat(gateway_id))
        beat = orjson.loads(beat_raw) if beat_raw else None
        sessions = sorted(_s(c) for c in
                          await client.smembers(redis_keys.gateway_sessions(gateway_id)))
        gateways.append({"gateway": gateway_id, "alive": beat is not None,
                         "ready": bool(beat and beat.get("ready")),
                         "sessions": len(sessions),
                         "max_sessions": beat.get("max_sessions") if beat else None,
                         # the gateway stamps its heartbeat in unix milliseconds
                         "heartbeat_age_s": round((now_ms - float(beat["at"])) / 1000, 1)
                         if beat and "at" in beat else None})
        for call_id in sessions:
            rec = _decode(await client.hgetall(redis_keys.session_record(call_id)))
            started = float(rec.get("started_at") or now_ms)
            calls.append({"call_id": call_id, "gateway": gateway_id,
                          "state": rec.get("state", "?"), "profile": rec.get("profile", ""),
                          "duration_s": round((now_ms - started) / 1000, 1)})
    stream: dict[str, Any] = {"length": await client.xlen(redis_keys.EVENTS_STREAM),
                              "lag": None, "pending": None, "consumers": 0}
    try:
        for group in await client.xinfo_groups(redis_keys.EVENTS_STREAM):
            if _s(group.get("name")) == redis_keys.EVENTS_GROUP:
                stream.update(lag=group.get("lag"), pending=group.get("pending"),
                              consumers=group.get("consumers"))
    except aioredis.ResponseError:
        pass  # no stream or group yet
    return {"calls": calls, "gateways": gateways, "events_stream": stream,
            "queued_jobs": await client.zcard(redis_keys.JOB_QUEUE),
            "dead_letters": await client.xlen(redis_keys.DEAD_LETTER_STREAM)}


def render_status(status: dict[str, Any]) -> str:
    lines = [f"live calls: {len(status['calls'])}"]
    if status["calls"]:
        lines.append(f"  {'CALL ID':<38} {'GATEWAY':<14} {'STATE':<10} {'DURATION':>9}")
        for c in status["calls"]:
            lines.append(f"  {c['call_id']:<38} {c['gateway']:<14} {c['state']:<10} "
                         f"{c['duration_s']:>8.1f}s")
    lines.append(f"gateways: {len(status['gateways'])}")
    for g in status["gateways"]:
        health = ("ready" if g["ready"] else "draining/not ready") if g["alive"] else "NO HEARTBEAT"
        lines.append(f"  {g['gateway']:<20} {health:<20} sessions {g['sessions']}"
                     f"/{g['max_sessions'] if g['max_sessions'] is not None else '?'}"
                     f"  heartbeat {g['heartbeat_age_s']}s ago")
    s = status["events_stream"]
    lines.append(f"events stream: {s['length']} entries, consumer lag {s['lag']}, "
                 f"pending {s['pending']}, consumers {s['consumers']}")
    lines.append(f"queued jobs: {status['queued_jobs']}   dead letters: {status['dead_letters']}")
    return "\n".join(lines)


async def collect_call(client: aioredis.Redis, call_id: str,
                       scan_limit: int = 100_000) -> dict[str, Any]:
    """Everything Redis knows of one call: events, call record, jobs, session, transcript."""
    events = []
    # The stream is indexed by time, not call: scan newest-first, bounded.
    for entry_id, fields in await client.xrevrange(redis_keys.EVENTS_STREAM, count=scan_limit):
        if _s(fields.get(b"call_id")) == call_id:
            events.append({"id": _s(entry_id), "type": _s(fields.get(b"type")),
                           "received_at": _s(fields.get(b"received_at"))})
    events.reverse()
    jobs = sorted(_s(k) for k in await client.keys(f"arq:*{call_id}*"))
    transcript = [{"role": _s(f.get(b"role")), "text": _s(f.get(b"text")), "at": _s(f.get(b"at"))}
                  for _, f in await client.xrange(redis_keys.transcript_stream(call_id))]
    return {"call_id": call_id, "events": events,
            "call": _decode(await client.hgetall(redis_keys.call_record(call_id))),
            "jobs": jobs,
            "session": _decode(await client.hgetall(redis_keys.session_record(call_id))),
            "transcript": transcript}


def render_call(info: dict[str, Any]) -> str:
    lines = [f"call {info['call_id']}", "events:"]
    lines += [f"  {e['id']:<18} {e['type']}" for e in info["events"]] or ["  (none)"]
    lines.append("call record:")
    lines += [f"  {k}: {v}" for k, v in sorted(info["call"].items())] or ["  (none)"]
    lines.append("jobs: " + (", ".join(info["jobs"]) or "(none)"))
    lines.append("media session:")
    lines += [f"  {k}: {v}" for k, v in sorted(info["session"].items())] or ["  (none)"]
    lines.append("transcript:")
    lines += [f"  {t['role']:>6}: {t['text']}" for t in info["transcript"]] or ["  (none)"]
    return "\n".join(lines)

"""`callbridge status` and `callbridge calls show`: what on-call needs, read from Redis only."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

from callbridge.services.call_orchestrator.idempotency import event_job_id
from callbridge.shared import redis_keys
from callbridge.shared.jobs import HANGUP_CALL, TRANSFER_CALL, job_id
from callbridge.shared.redis_values import as_text, as_text_hash


async def collect_status(client: aioredis.Redis) -> dict[str, Any]:
    now_ms = time.time() * 1000
    gateways, calls = [], []
    for raw_id in sorted(await client.smembers(redis_keys.GATEWAYS)):
        gateway_id = as_text(raw_id)
        beat_raw = await client.get(redis_keys.gateway_heartbeat(gateway_id))
        beat = orjson.loads(beat_raw) if beat_raw else None
        sessions = sorted(as_text(c) for c in
                          await client.smembers(redis_keys.gateway_sessions(gateway_id)))
        gateways.append({"gateway": gateway_id, "alive": beat is not None,
                         "ready": bool(beat and beat.get("ready")),
                         "sessions": len(sessions),
                         "max_sessions": beat.get("max_sessions") if beat else None,
                         # the gateway stamps its heartbeat in unix milliseconds
                         "heartbeat_age_s": round((now_ms - float(beat["at"])) / 1000, 1)
                         if beat and "at" in beat else None})
        for call_id in sessions:
            rec = as_text_hash(await client.hgetall(redis_keys.session_record(call_id)))
            started = float(rec.get("started_at") or now_ms)
            calls.append({"call_id": call_id, "gateway": gateway_id,
                          "state": rec.get("state", "?"), "profile": rec.get("profile", ""),
                          "duration_s": round((now_ms - started) / 1000, 1)})
    stream: dict[str, Any] = {"length": await client.xlen(redis_keys.EVENTS_STREAM),
                              "lag": None, "pending": None, "consumers": 0}
    try:
        for group in await client.xinfo_groups(redis_keys.EVENTS_STREAM):
            if as_text(group.get("name")) == redis_keys.EVENTS_GROUP:
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


#: `calls show` reads the events stream newest-first in pages of this many entries ...
SCAN_PAGE = 1000
#: ... and stops after this many (a flag raises it), so it never blocks Redis for long: one
#: page is one short XREVRANGE, never the whole stream at once.
DEFAULT_SCAN_LIMIT = 20_000
TRANSCRIPT_LIMIT = 5000


async def _events_of(client: aioredis.Redis, call_id: str,
                     scan_limit: int) -> tuple[list[dict[str, Any]], int, bool]:
    """(the call's events oldest first, entries scanned, whether older ones were left).

    The stream is indexed by time, not call: page newest-first with a bounded COUNT, up to
    `scan_limit` entries in all."""
    events: list[dict[str, Any]] = []
    scanned = 0
    upper = "+"
    while scanned < scan_limit:
        count = min(SCAN_PAGE, scan_limit - scanned)
        page = await client.xrevrange(redis_keys.EVENTS_STREAM, max=upper, min="-",
                                      count=count)
        scanned += len(page)
        for entry_id, fields in page:
            if as_text(fields.get(b"call_id")) == call_id:
                events.append({"id": as_text(entry_id), "type": as_text(fields.get(b"type")),
                               "received_at": as_text(fields.get(b"received_at")),
                               "job_id": event_job_id(as_text(fields.get(b"type")), call_id,
                                                      fields.get(b"body") or b"")})
        if len(page) < count:
            return events[::-1], scanned, False
        upper = "(" + as_text(page[-1][0])  # exclusive: continue below the last one seen
    more = bool(await client.xrevrange(redis_keys.EVENTS_STREAM, max=upper, min="-", count=1))
    return events[::-1], scanned, more


async def _jobs_of(client: aioredis.Redis, call_id: str, event_job_ids: list[str]) -> list[str]:
    """The call's arq keys, looked up by their deterministic ids (shared/jobs.py): never a
    KEYS or SCAN over the keyspace."""
    job_ids = [*event_job_ids, job_id(HANGUP_CALL, call_id),
               job_id(HANGUP_CALL, call_id) + ":fallback", job_id(TRANSFER_CALL, call_id)]
    keys = [prefix + jid for jid in job_ids
            for prefix in (job_key_prefix, in_progress_key_prefix, result_key_prefix,
                           retry_key_prefix)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    found = await pipe.execute()
    return sorted(key for key, exists in zip(keys, found, strict=True) if exists)


async def collect_call(client: aioredis.Redis, call_id: str,
                       scan_limit: int = DEFAULT_SCAN_LIMIT) -> dict[str, Any]:
    """Everything Redis knows of one call: events, call record, jobs, session, transcript.
    Every read is bounded; `events_truncated` says when older entries were not scanned."""
    events, scanned, truncated = await _events_of(client, call_id, scan_limit)
    jobs = await _jobs_of(client, call_id, sorted({e.pop("job_id") for e in events}))
    transcript = [{"role": as_text(f.get(b"role")), "text": as_text(f.get(b"text")),
                   "at": as_text(f.get(b"at"))}
                  for _, f in await client.xrange(redis_keys.transcript_stream(call_id),
                                                  count=TRANSCRIPT_LIMIT)]
    return {"call_id": call_id, "events": events, "events_scanned": scanned,
            "events_truncated": truncated, "scan_limit": scan_limit,
            "call": as_text_hash(await client.hgetall(redis_keys.call_record(call_id))),
            "jobs": jobs,
            "session": as_text_hash(await client.hgetall(redis_keys.session_record(call_id))),
            "transcript": transcript}


def render_call(info: dict[str, Any]) -> str:
    lines = [f"call {info['call_id']}", "events:"]
    lines += [f"  {e['id']:<18} {e['type']}" for e in info["events"]] or ["  (none)"]
    if info.get("events_truncated"):
        lines.append(f"  (searched the newest {info['events_scanned']} stream entries only; "
                     "older events of this call may exist: raise the bound with --scan N)")
    lines.append("call record:")
    lines += [f"  {k}: {v}" for k, v in sorted(info["call"].items())] or ["  (none)"]
    lines.append("jobs: " + (", ".join(info["jobs"]) or "(none)"))
    lines.append("media session:")
    lines += [f"  {k}: {v}" for k, v in sorted(info["session"].items())] or ["  (none)"]
    lines.append("transcript:")
    lines += [f"  {t['role']:>6}: {t['text']}" for t in info["transcript"]] or ["  (none)"]
    return "\n".join(lines)

"""Re-run events from the events stream, safely: the on-call engineer's `callbridge replay`.

Replays go through the same deterministic job ids and side-effect guards as live traffic,
so replaying events that were already handled does nothing harmful: arq refuses a job id it
still knows (counted as "duplicate"), and a job that runs again finds the call bridged /
ended / claimed and does nothing. `force_call` clears one call's guards first (its dialog
and transfer claims, the call record's outcome fields and the selected entries' arq job
records), which *will* request a new dialog if that call is still up.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix, retry_key_prefix

from callbridge.shared import redis_keys
from callbridge.shared.jobs import HANDLE_EVENT

from .consumer import job_payload
from .handlers import is_handled

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Bound on entries one replay selects (read in pages).
MAX_ENTRIES = 100_000


def parse_duration(text: str) -> float:
    """'90s', '15m', '2h', '7d' -> seconds."""
    match = _RELATIVE.match(text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_time(text: str, now: float | None = None) -> float:
    """ISO time ('2026-01-15T12:00:00Z', naive = UTC) or relative ('15m' = 15 min ago)
    -> unix seconds."""
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    value = text.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (ISO like 2026-01-15T12:00:00Z, "
                         "or relative like 15m)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class Selected:
    stream_id: str
    type: str
    call_id: str
    received_at: str
    job_id: str
    payload: dict[str, str]


@dataclass
class Summary:
    enqueued: int = 0
    duplicates: int = 0
    ignored: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def _call_ids(payload: dict[str, str]) -> set[str]:
    """The entry's call id and, for dialog events, the parent call's id."""
    ids = {payload["call_id"]} if payload["call_id"] else set()
    try:
        body = orjson.loads(payload["body"])
        parent = ((body.get("properties") or {}).get("dialog") or {}).get("parentCall") or {}
        if parent.get("id"):
            ids.add(str(parent["id"]))
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return ids


async def select(redis: Any, *, from_id: str | None = None, to_id: str | None = None,
                 since: float | None = None, until: float | None = None,
                 call_id: str | None = None, types: Iterable[str] = ()) -> list[Selected]:
    """Stream entries in [from/since, to/until] matching call id and types, oldest first."""
    start = from_id or (f"{int(since * 1000)}-0" if since is not None else "-")
    end = to_id or (f"{int(until * 1000)}" if until is not None else "+")
    wanted = set(types)
    out: list[Selected] = []
    cursor = start
    exclusive = False
    while len(out) < MAX_ENTRIES:
        page = await redis.xrange(redis_keys.EVENTS_STREAM, f"({cursor}" if exclusive
                                  else cursor, end, count=500)
        if not page:
            break
        for entry_id, fields in page:
            jid, payload, _ = job_payload(entry_id, fields)
            if wanted and payload["type"] not in wanted:
                continue
            if call_id and call_id not in _call_ids(payload):
                continue
            out.append(Selected(payload["stream_id"], payload["type"], payload["call_id"],
                                payload["received_at"], jid, payload))
        cursor = page[-1][0].decode() if isinstance(page[-1][0], bytes) else str(page[-1][0])
        exclusive = True
        if len(page) < 500:
            break
    return out


async def clear_guards(redis: ArqRedis, call_id: str, entries: list[Selected]) -> None:
    """--force: forget that `call_id` was handled (claims, record outcome, job records)."""
    keys = [redis_keys.dialog_claim(call_id), redis_keys.transfer_claim(call_id)]
    for entry in entries:
        keys += [job_key_prefix + entry.job_id, result_key_prefix + entry.job_id,
                 retry_key_prefix + entry.job_id]
    await redis.delete(*keys)
    await redis.zrem(redis_keys.JOB_QUEUE, *[e.job_id for e in entries] or ["-"])
    await redis.delete(redis_keys.call_record(call_id))


async def replay(redis: ArqRedis, entries: list[Selected],
                 progress: Callable[[Selected], None] | None = None) -> Summary:
    """Enqueue each entry's handle_event job under its deterministic id."""
    summary = Summary()
    for entry in entries:
        if not is_handled(entry.type):  # as the consumer does: nothing to do for these
            summary.ignored += 1
            if progress is not None:
                progress(entry)
            continue
        try:
            job = await redis.enqueue_job(HANDLE_EVENT, entry.payload, _job_id=entry.job_id,
                                          _queue_name=redis_keys.JOB_QUEUE)
            if job is None:
                summary.duplicates += 1
            else:
                summary.enqueued += 1
        except Exception as exc:
            summary.failed += 1
            summary.errors.append(f"{entry.stream_id}: {type(exc).__name__}: {exc}")
        if progress is not None:
            progress(entry)
    return summary

"""Idempotency: deterministic job ids for events, and leased claims for side effects.

Two layers, because arq's job ids only deduplicate while a job is queued, running or its
result is kept (ORCHESTRATOR_KEEP_RESULT_S), while a dialog must be requested at most once
per call *forever*:

1. `event_job_id`: `handle_event:<type>:<call_id>:<sha1(raw body)[:16]>` - identical
   duplicate webhooks, XAUTOCLAIMed entries and replays map to one arq job.
2. `Claim` (`redis_keys.dialog_claim` / `transfer_claim`): SET NX of a JSON
   {owner, lease_until, lease, instance} before the POST; `posted_at` is added just before
   the request is sent. The outcome (dialog id) goes to the call record; a claimer that
   sees it does nothing. A claim that exists *without* a recorded outcome:
   - its owner process is alive (its lease, lease.py, still holds the instance id the
     claim names) and the claim's deadline has not passed -> the owner may be mid-request:
     retry after a while (`held`);
   - its owner process is dead (lease gone: within ORCHESTRATOR_LEASE_S of a crash), the
     deadline passed (owner's job past its arq timeout), or the owner marked it `uncertain`
     after a request that failed ambiguously (timeout, 5xx; the deadline is then cut to one
     more request timeout, time for a request the platform is still processing to take
     effect) -> `stale`: the new owner takes it over atomically and must *ask the Calls API*
     whether the earlier POST took effect before posting again. When the earlier owner had
     sent its POST (`posted_at`), the platform may still apply it until one request timeout
     plus one settle time after it was sent (what a live owner allows, above), so
     dialogs.py keeps asking until then (a POST in flight when its sender died is found,
     not duplicated).
   A definitive failure (4xx, 429, connection refused) releases the claim.

Remaining window (honest): a POST the platform received but had not applied (no dialogId
visible on GET /calls/1/calls/{id}) two request timeouts after it was sent; and a process
that died after marking `posted_at` but before its request left the machine costs its call
those two request timeouts (10 s by default) before the new owner posts. A second dialog request
for a call in a dialog would most likely be refused by the platform rather than duplicate
the media leg.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import orjson
from redis.asyncio import Redis

from callbridge.shared import redis_keys
from callbridge.shared.jobs import HANDLE_EVENT, job_id


def event_job_id(event_type: str, call_id: str, body: bytes) -> str:
    """Same raw webhook body -> same arq job id, in every process and every replay."""
    digest = hashlib.sha1(body, usedforsecurity=False).hexdigest()[:16]
    return job_id(HANDLE_EVENT, event_type or "-", call_id or "-", digest)


_CLAIM = """
if #KEYS > 1 then
  local v = redis.call('HMGET', KEYS[2], 'dialog_id', 'state')
  if v[1] and v[1] ~= '' then return {'done', ''} end
  if v[2] == 'ended' then return {'ended', ''} end
end
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  return {'acquired', ''}
end
local ok, c = pcall(cjson.decode, cur)
if ok and type(c) == 'table' and tonumber(c['lease_until'] or 0) > tonumber(ARGV[2]) then
  -- The owner's process must still hold its lease (lease.py) for the claim to be held.
  if type(c['lease']) ~= 'string' or redis.call('GET', c['lease']) == c['instance'] then
    return {'held', cur}
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return {'stale', cur}
"""

_IF_OWNER = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, c = pcall(cjson.decode, cur)
if not ok or type(c) ~= 'table' or c['owner'] ~= ARGV[1] then return 0 end
if ARGV[2] == 'release' then redis.call('DEL', KEYS[1]) return 1 end
if ARGV[2] == 'posting' then
  c['posted_at'] = tonumber(ARGV[3])
else
  c['lease_until'] = tonumber(ARGV[3])
  c['uncertain'] = 1
end
redis.call('SET', KEYS[1], cjson.encode(c), 'KEEPTTL')
return 1
"""

ClaimOutcome = Literal["acquired", "held", "stale", "done", "ended"]


@dataclass(frozen=True)
class ClaimResult:
    outcome: ClaimOutcome
    previous: dict[str, object] | None = None

    def posted_at_s(self) -> float | None:
        """When the previous owner sent its request (unix seconds), if it got that far."""
        if not self.previous or self.previous.get("posted_at") is None:
            return None
        return float(str(self.previous["posted_at"])) / 1000

    def held_for_s(self) -> float:
        """Seconds left on the current owner's lease (for a `held` claim)."""
        if not self.previous:
            return 0.0
        until = float(str(self.previous.get("lease_until", 0)))
        return max(0.0, until / 1000 - time.time())


class Claim:
    """A leased, take-over-able SET NX guard on one side effect of one call."""

    def __init__(self, redis: Redis, key: str, owner_prefix: str,
                 owner_process: dict[str, str] | None = None) -> None:
        """`owner_process`: the lease fields of the process that owns this claim
        (`ProcessLease.claim_fields()`); without them, only the deadline frees the claim."""
        self._redis = redis
        self.key = key
        self.owner = f"{owner_prefix}#{uuid.uuid4().hex[:8]}"
        self._owner_process = owner_process or {}

    async def acquire(self, lease_s: float, ttl_s: int = redis_keys.CALL_TTL_S,
                      record_key: str | None = None) -> ClaimResult:
        """Claim, in one round trip. With `record_key` (the call record), first check it
        (claim untouched): `done` when it already has a dialog_id, `ended` when the call
        ended without one."""
        now = int(time.time() * 1000)
        value = orjson.dumps({"owner": self.owner, "lease_until": now + int(lease_s * 1000),
                              "at": now, **self._owner_process}).decode()
        keys = [self.key, record_key] if record_key else [self.key]
        outcome, previous = await self._redis.eval(_CLAIM, len(keys), *keys, value, str(now),
                                                   str(ttl_s))
        outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        prev: dict[str, object] | None = None
        if previous:
            try:
                prev = orjson.loads(previous)
            except orjson.JSONDecodeError:
                prev = {"raw": str(previous)}
        if outcome not in ("acquired", "held", "stale", "done", "ended"):
            raise RuntimeError(f"unexpected claim outcome {outcome!r}")
        return ClaimResult(outcome, prev)  # type: ignore[arg-type]

    async def release(self) -> bool:
        """The side effect definitely did not happen: let the next attempt claim afresh."""
        return bool(await self._redis.eval(_IF_OWNER, 1, self.key, self.owner, "release", "0"))

    async def mark_posting(self) -> bool:
        """The request is about to be sent: a new owner must allow for it taking effect."""
        now = int(time.time() * 1000)
        return bool(await self._redis.eval(_IF_OWNER, 1, self.key, self.owner, "posting",
                                           str(now)))

    async def mark_uncertain(self, settle_s: float = 0.0) -> bool:
        """The side effect may have happened: the next claimer must check before acting,
        and not before `settle_s` (a request we gave up on may still be applied)."""
        until = int((time.time() + settle_s) * 1000)
        return bool(await self._redis.eval(_IF_OWNER, 1, self.key, self.owner, "uncertain",
                                           str(until)))

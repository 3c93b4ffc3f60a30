"""This process's lease: how the other orchestrators learn, within ORCHESTRATOR_LEASE_S, that
it died, and take over its work.

A caller rings for as long as their patience lasts (seconds), so a worker that dies mid-job
must be replaced in about a second, not after arq's job timeout (30 s by default). Three
things a dead process can hold, and how each is released by the lease:

- **its running arq jobs.** arq marks a running job with `arq:in-progress:<id>`, set when
  the job starts with a TTL of the worker's `in_progress_timeout_s`; while it exists no
  other worker starts the job. We set that TTL to the lease and renew the keys of the jobs
  this process is running with every lease renewal, so a dead process's jobs become
  startable by any other worker's next queue poll one lease after its last renewal.
- **its dialog and transfer claims** (idempotency.py). A claim names the lease of its owner
  process and that process's instance id; a claim whose owner's lease is gone is stale at
  once, whatever its own (job-timeout-long) deadline says.
- **its pending stream entries** (consumer.py): entries it read but never acknowledged are
  claimed by a live consumer as soon as the dead one's lease is gone.

The lease is one Redis string per process (`redis_keys.orchestrator_lease(consumer)`, value:
the instance id), renewed every third of its lifetime in one pipelined round trip together
with the in-progress keys. A restarted process with the same consumer name gets a new
instance id, so claims of the process that died are not mistaken for its own.

Cost of a false death (a live process that could not renew for a whole lease: a stalled
event loop, Redis unreachable): another process may start the same job while this one still
runs it; the claim protocol turns that into one dialog (dialogs.py polls the Calls API while
the earlier owner's POST may still take effect). A renewal that comes late is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from redis.exceptions import RedisError

from callbridge.shared import redis_keys

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ProcessLease:
    """Renew with `run()` (a task for the life of the process); `release()` at a clean stop."""

    def __init__(self, redis: Redis, consumer: str, lease_s: float) -> None:
        self._redis = redis
        self.consumer = consumer
        self.key = redis_keys.orchestrator_lease(consumer)
        self.instance = uuid.uuid4().hex[:12]
        self.lease_s = lease_s
        self._lease_ms = int(lease_s * 1000)
        self._running_jobs: Callable[[], Iterable[str]] = tuple
        self._last_renewal = 0.0

    @property
    def interval_s(self) -> float:
        """Renew three times a lease: two renewals may be lost before it lapses."""
        return self.lease_s / 3

    def track_jobs(self, running_job_ids: Callable[[], Iterable[str]]) -> None:
        """The arq job ids this process runs right now; their in-progress keys are renewed."""
        self._running_jobs = running_job_ids

    async def renew(self) -> None:
        """One round trip: the process lease, and the in-progress key of each running job
        (PEXPIRE of a key a finished job already deleted is a no-op)."""
        now = time.monotonic()
        if self._last_renewal and now - self._last_renewal > self.lease_s:
            log.warning("lease renewed %.2f s after the previous renewal (lease %.2f s): other "
                        "processes may have taken over this process's jobs meanwhile",
                        now - self._last_renewal, self.lease_s)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self.key, self.instance, px=self._lease_ms)
            for job_id in self._running_jobs():
                pipe.pexpire(in_progress_key_prefix + job_id, self._lease_ms)
            await pipe.execute()
        self._last_renewal = now

    async def run(self) -> None:
        """Renew until cancelled. Redis trouble is retried at the same pace: the lease lapses
        only if Redis stays unreachable for a whole lease, and then nobody can take over
        anything either until it is back."""
        while True:
            try:
                await self.renew()
            except (RedisError, OSError) as exc:
                log.warning("lease renewal failed (%s); retrying", exc)
            await asyncio.sleep(self.interval_s)

    async def release(self) -> None:
        """A clean stop: give up the lease now (only if still ours), so that whatever this
        process leaves pending is taken over at once instead of one lease later."""
        try:
            await self._redis.eval(_RELEASE, 1, self.key, self.instance)
        except (RedisError, OSError) as exc:
            log.warning("could not release the lease (%s); it lapses by itself", exc)

    def claim_fields(self) -> dict[str, str]:
        """What a claim records about its owner process, so others can tell it is alive."""
        return {"lease": self.key, "instance": self.instance}


async def alive(redis: Redis, consumers: list[str]) -> list[bool]:
    """Whether each consumer's process currently holds its lease."""
    if not consumers:
        return []
    values = await redis.mget([redis_keys.orchestrator_lease(c) for c in consumers])
    return [v is not None for v in values]

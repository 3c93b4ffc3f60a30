"""Events stream -> arq jobs, through the consumer group (`EVENTS_STREAM`, `EVENTS_GROUP`).

Delivery guarantees: an entry is acknowledged (XACK) only after its job is in the arq queue,
so a consumer that dies in between leaves it pending. Pending entries are taken over by a
live consumer in two ways: those of a consumer whose process lost its lease (lease.py: dead
within ORCHESTRATOR_LEASE_S) with XCLAIM as soon as that is seen (`take_over_dead`, every
third of a lease); and, as a backstop for anything else, those idle longer than
ORCHESTRATOR_CLAIM_IDLE_S with XAUTOCLAIM (at start and periodically). Re-enqueueing such
an entry is harmless: its job id is deterministic (`idempotency.event_job_id`), so arq
refuses a job that already exists. Event types the
orchestrator does not act on are acknowledged without a job (logged at debug).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import RedisError, ResponseError

from callbridge.shared import redis_keys
from callbridge.shared.infobip_events import EventType
from callbridge.shared.jobs import HANDLE_EVENT
from callbridge.shared.redis_values import as_text, process_name

from .handlers import is_handled
from .idempotency import event_job_id
from .kill_points import kill_point
from .lease import alive
from .metrics import EVENTS
from .runtime import Runtime

log = logging.getLogger(__name__)

#: Bound on XAUTOCLAIM pages per pass (100 entries each).
MAX_CLAIM_PAGES = 50


#: XGROUP DELCONSUMER drops the consumer's pending entries with it, so it must run only if,
#: at that instant, the consumer still holds nothing and still has no lease: atomically, or
#: a consumer that read entries between our look and our delete would lose them.
_FORGET_IF_EMPTY = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending = nil, nil
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
  end
  if name == ARGV[2] then
    if pending == 0 then return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
    return 0
  end
end
return 0
"""


def job_payload(entry_id: Any, fields: dict[Any, Any]) -> tuple[str, dict[str, str], bytes]:
    """(job id, handle_event payload, raw body) for one stream entry."""
    f = {as_text(k): v for k, v in fields.items()}
    raw = f.get("body", b"")
    body = raw if isinstance(raw, bytes) else str(raw).encode()
    kind, call_id = as_text(f.get("type", "")), as_text(f.get("call_id", ""))
    payload = {"stream_id": as_text(entry_id), "type": kind, "call_id": call_id,
               "body": body.decode(errors="replace"),
               "received_at": as_text(f.get("received_at", ""))}
    return event_job_id(kind, call_id, body), payload, body


async def ensure_group(redis: ArqRedis) -> None:
    """Create the group (and the stream) if missing, reading from the start."""
    try:
        await redis.xgroup_create(redis_keys.EVENTS_STREAM, redis_keys.EVENTS_GROUP, id="0",
                                  mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class StreamConsumer:
    def __init__(self, rt: Runtime, name: str | None = None) -> None:
        self.rt = rt
        self.redis = rt.redis
        s = rt.settings
        self.name = name or s.orchestrator_consumer_name or process_name()
        self.count = s.orchestrator_read_count
        self.block_ms = s.orchestrator_block_ms
        self.claim_idle_ms = int(s.orchestrator_claim_idle_s * 1000)
        self.claim_interval_s = s.orchestrator_claim_interval_s
        self._stopping = asyncio.Event()
        self.running = False
        self.handled = 0
        self._acks: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Stop after the current batch (its entries are enqueued and acknowledged)."""
        self._stopping.set()

    async def run(self) -> None:
        """Consume until `stop()`. Redis trouble (down, restarted without the group) is
        retried with backoff; entries of a failed batch stay pending and are re-read."""
        self.running = True
        backoff = 0.1
        recover = True
        last_claim = time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    if recover:
                        await ensure_group(self.redis)
                        await self._catch_up()
                        recover = False
                    await self._read_once(">")
                    if time.monotonic() - last_claim >= self.claim_interval_s:
                        last_claim = time.monotonic()
                        await self.reclaim()
                    backoff = 0.1
                except (RedisError, OSError) as exc:
                    log.warning("events stream unavailable (%s); retrying in %.1fs", exc, backoff)
                    recover = True
                    try:
                        await asyncio.wait_for(self._stopping.wait(), backoff)
                    except TimeoutError:
                        pass
                    backoff = min(5.0, backoff * 2)
        finally:
            await self.flush_acks()
            self.running = False

    async def _catch_up(self) -> None:
        """Our own pending entries (a failed batch) first, then the dead consumers'."""
        for _ in range(100):
            if not await self._read_once("0"):
                break
        await self.reclaim()

    async def _read_once(self, last_id: str) -> int:
        block = self.block_ms if last_id == ">" else None
        resp = await self.redis.xreadgroup(redis_keys.EVENTS_GROUP, self.name,
                                           {redis_keys.EVENTS_STREAM: last_id},
                                           count=self.count, block=block)
        total = 0
        for _stream, entries in resp or []:
            total += await self.process(entries)
        return total

    async def reclaim(self) -> int:
        """XAUTOCLAIM entries idle past the threshold (a dead consumer's) and enqueue them."""
        start = "0-0"
        total = 0
        for _ in range(MAX_CLAIM_PAGES):
            result = await self.redis.xautoclaim(
                redis_keys.EVENTS_STREAM, redis_keys.EVENTS_GROUP, self.name,
                min_idle_time=self.claim_idle_ms, start_id=start, count=100)
            start = as_text(result[0])
            entries = result[1]
            if entries:
                log.warning("claimed %d entries left pending by another consumer", len(entries))
                total += await self.process(entries)
            if start == "0-0":
                break
        return total

    async def take_over_dead(self, min_idle_ms: int) -> int:
        """XCLAIM the pending entries of consumers whose process holds no lease (dead), idle
        at least `min_idle_ms` (one lease: older than the dead process's last renewal), and
        enqueue them. Bounded: XINFO CONSUMERS lists the group's consumers, 100 entries a
        consumer a pass."""
        consumers = await self.redis.xinfo_consumers(redis_keys.EVENTS_STREAM,
                                                     redis_keys.EVENTS_GROUP)
        names = [as_text(c["name"]) for c in consumers if as_text(c["name"]) != self.name]
        pending_of = {as_text(c["name"]): int(c.get("pending") or 0) for c in consumers}
        total = 0
        for name, is_alive in zip(names, await alive(self.redis, names), strict=True):
            if is_alive:
                continue
            if not pending_of[name]:
                # A dead consumer that holds nothing: forget it, or every restart of every
                # process (a new <hostname>-<pid>) would stay in the group forever.
                await self.redis.eval(_FORGET_IF_EMPTY, 2, redis_keys.EVENTS_STREAM,
                                      redis_keys.orchestrator_lease(name),
                                      redis_keys.EVENTS_GROUP, name)
                continue
            pending = await self.redis.xpending_range(
                redis_keys.EVENTS_STREAM, redis_keys.EVENTS_GROUP, min="-", max="+",
                count=100, consumername=name, idle=min_idle_ms)
            ids = [p["message_id"] for p in pending]
            if not ids:
                continue
            entries = await self.redis.xclaim(redis_keys.EVENTS_STREAM, redis_keys.EVENTS_GROUP,
                                              self.name, min_idle_time=min_idle_ms,
                                              message_ids=ids)
            if entries:
                log.warning("took over %d entries left pending by dead consumer %s",
                            len(entries), name)
                total += await self.process(entries)
        return total

    async def watch_dead(self, lease_s: float) -> None:
        """`take_over_dead` every third of a lease until stopped (a task of its own, so a
        blocking XREADGROUP does not delay it)."""
        while not self._stopping.is_set():
            try:
                await self.take_over_dead(int(lease_s * 1000))
            except (RedisError, OSError) as exc:
                log.debug("dead-consumer check failed (%s); the read loop reports Redis "
                          "trouble", exc)
            try:
                await asyncio.wait_for(self._stopping.wait(), lease_s / 3)
            except TimeoutError:
                pass

    async def process(self, entries: list[Any]) -> int:
        """Enqueue a job per entry (new calls first, all concurrently), then acknowledge
        the whole batch. Only the latency of CALL_RECEIVED is user-visible (the caller is
        ringing); follow-ups are bookkeeping and may wait a few milliseconds."""
        ids = [entry_id for entry_id, _ in entries]
        if ids:
            kill_point("consumer.read")
        jobs = []
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream while pending
                continue
            job_id, payload, _ = job_payload(entry_id, fields)
            if not is_handled(payload["type"]):
                log.debug("event type %s acknowledged and ignored", payload["type"])
                EVENTS.labels("ignored").inc()
                continue
            jobs.append((job_id, payload))
        jobs.sort(key=lambda j: j[1]["type"] != EventType.CALL_RECEIVED)
        results = await asyncio.gather(*(self._enqueue(jid, p) for jid, p in jobs))
        if not all(results):
            raise RedisError("enqueue failed for part of a batch; left pending")
        if ids:
            # Acknowledge in the background so the next read starts now: the jobs are safely
            # enqueued already; a lost XACK only leaves entries pending, which XAUTOCLAIM
            # re-enqueues under the same job ids (a no-op).
            task = asyncio.create_task(self._ack(ids))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)
        self.handled += len(ids)
        return len(ids)

    async def _ack(self, ids: list[Any]) -> None:
        try:
            await self.redis.xack(redis_keys.EVENTS_STREAM, redis_keys.EVENTS_GROUP, *ids)
        except (RedisError, OSError) as exc:
            log.warning("XACK of %d entries failed (%s); they will be reclaimed", len(ids), exc)

    async def flush_acks(self) -> None:
        """Wait for outstanding acknowledgements (shutdown)."""
        if self._acks:
            await asyncio.gather(*self._acks, return_exceptions=True)

    async def _enqueue(self, job_id: str, payload: dict[str, str]) -> bool:
        try:
            fresh = await self.rt.enqueue(HANDLE_EVENT, payload, job_id=job_id)
        except (RedisError, OSError) as exc:
            log.warning("could not enqueue %s: %s", job_id, exc)
            return False
        EVENTS.labels("enqueued" if fresh else "duplicate").inc()
        return True

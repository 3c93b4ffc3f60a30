"""The coalescing XADD appender: the durable path of the ingress.

Why coalesce: awaiting one XADD per request spends most of the time in the Redis client's
per-command overhead; an ingress doing that is slower than an Express app storing nothing
(/work/shared/perf-notes.md). Here every request queues its entry and awaits a future; one
drainer task sends everything queued in the same event-loop turn (and everything that queued
while the previous flush was in flight) as ONE non-transactional pipeline. Each request still
answers only after *its own* entry id came back, and a failed flush fails every request in it.

Failure semantics (what the HTTP layer turns into 503 + Retry-After):
- Redis unreachable or erroring -> the flush fails fast (connect refused is immediate).
- A flush slower than `timeout_s` -> its requests fail. Such an entry may still land in Redis
  after we answered 503: Infobip then retries and the event is stored twice. That is a
  duplicate, never a loss; the orchestrator dedupes (dialog claim per call).
- An XADD refused by Redis itself (e.g. OOM at `maxmemory`) fails only that request.
Nothing is acknowledged that Redis did not acknowledge.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

Fields = Mapping[str | bytes, str | bytes | int]
#: Called after each flush: (entries in it, seconds it took, succeeded).
FlushObserver = Callable[[int, float, bool], None]


class AppendFailed(Exception):
    """The entry was not acknowledged by Redis; `reason` is a short machine code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Trim:
    """XADD trimming. `max_age_ms` > 0 trims by age (MINID ~), else `maxlen` > 0 by length
    (MAXLEN ~); approximate (`~`) lets Redis trim whole macro nodes, which is cheap."""

    maxlen: int = 0
    max_age_ms: int = 0

    def xadd_kwargs(self) -> dict[str, object]:
        if self.max_age_ms > 0:
            return {"minid": str(int(time.time() * 1000) - self.max_age_ms), "approximate": True}
        if self.maxlen > 0:
            return {"maxlen": self.maxlen, "approximate": True}
        return {}


@dataclass
class AppenderStats:
    """Plain counters (read by /metrics and asserted by tests; no timing involved)."""

    flushes: int = 0
    entries: int = 0
    max_batch: int = 0
    batches_over_one: int = 0
    failed_flushes: int = 0
    failed_entries: int = 0
    timeouts: int = 0
    overloaded: int = 0
    best_effort_dropped: int = 0


@dataclass(slots=True)
class _Item:
    stream: str
    fields: Fields
    trim: Trim
    future: asyncio.Future[bytes] | None  # None: best effort, nobody waits


@dataclass
class StreamAppender:
    """Appends entries to Redis streams, coalesced (default) or one awaited XADD each."""

    redis: aioredis.Redis
    timeout_s: float = 2.0
    coalesce: bool = True
    max_batch: int = 1000
    max_pending: int = 20000
    #: Best-effort entries (the rejected stream) are dropped beyond this many queued.
    max_best_effort_pending: int = 1000
    observer: FlushObserver | None = None
    stats: AppenderStats = field(default_factory=AppenderStats)
    _pending: list[_Item] = field(default_factory=list)
    _drainer: asyncio.Task[None] | None = None
    _closing: bool = False

    async def append(self, stream: str, fields: Fields, trim: Trim) -> bytes:
        """XADD and return the entry id once Redis acknowledged it; raise AppendFailed."""
        if self._closing:
            raise AppendFailed("closing", "the ingress is shutting down")
        if not self.coalesce:
            return await self._append_direct(stream, fields, trim)
        if len(self._pending) >= self.max_pending:
            self.stats.overloaded += 1
            raise AppendFailed("overloaded", "too many appends waiting for Redis")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(stream, fields, trim, future))
        self._kick()
        try:
            # Bounds the wait behind an in-flight flush as well as our own flush.
            async with asyncio.timeout(self.timeout_s):
                return await future
        except TimeoutError:
            self.stats.timeouts += 1
            raise AppendFailed(
                "timeout", f"Redis did not acknowledge within {self.timeout_s}s") from None

    @property
    def idle(self) -> bool:
        """Nothing queued and no flush running (tests wait on this; no timing involved)."""
        return self._drainer is None and not self._pending

    def append_nowait(self, stream: str, fields: Fields, trim: Trim) -> bool:
        """Best effort (forensics): queue into the next flush, never wait, never raise.
        Returns False when the entry was dropped because Redis is falling behind."""
        if self._closing or len(self._pending) >= self.max_best_effort_pending:
            self.stats.best_effort_dropped += 1
            return False
        self._pending.append(_Item(stream, fields, trim, None))
        self._kick()
        return True

    async def _append_direct(self, stream: str, fields: Fields, trim: Trim) -> bytes:
        """The naive path: one awaited XADD per request (kept for the benchmark)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                entry_id: bytes = await self.redis.xadd(
                    stream, dict(fields), **trim.xadd_kwargs()
                )
        except TimeoutError:
            self.stats.timeouts += 1
            self._observe(1, started, ok=False)
            raise AppendFailed(
                "timeout", f"Redis did not acknowledge within {self.timeout_s}s") from None
        except (RedisError, OSError) as exc:
            self._observe(1, started, ok=False)
            raise AppendFailed("redis_unavailable", type(exc).__name__) from exc
        self._observe(1, started, ok=True)
        return entry_id

    def _kick(self) -> None:
        # The drainer task's first step runs in the *next* loop iteration, after every
        # request handler that became ready in this one has queued its entry.
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                await self._flush(batch)
        finally:
            self._drainer = None

    async def _flush(self, batch: list[_Item]) -> None:
        # Requests that already gave up (timed out, cancelled) are not written: they were
        # answered 503 and Infobip will send them again.
        live = [item for item in batch if item.future is None or not item.future.done()]
        if not live:
            return
        pipe = self.redis.pipeline(transaction=False)
        for item in live:
            pipe.xadd(item.stream, dict(item.fields), **item.trim.xadd_kwargs())
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                results = await pipe.execute(raise_on_error=False)
        except TimeoutError:
            self._fail_all(live, AppendFailed("timeout", "Redis pipeline timed out"), started)
            return
        except (RedisError, OSError) as exc:
            self._fail_all(live, AppendFailed("redis_unavailable", type(exc).__name__), started)
            return
        except asyncio.CancelledError:
            self._fail_all(live, AppendFailed("closing", "flush cancelled"), started)
            raise
        failed = 0
        for item, result in zip(live, results, strict=True):
            if isinstance(result, Exception):
                failed += 1
                self._settle(item, error=AppendFailed("redis_error", str(result)[:200]))
            else:
                self._settle(item, result=result)
        self.stats.failed_entries += failed
        self._observe(len(live), started, ok=failed == 0)

    def _fail_all(self, items: list[_Item], error: AppendFailed, started: float) -> None:
        self.stats.failed_entries += len(items)
        for item in items:
            self._settle(item, error=error)
        self._observe(len(items), started, ok=False)

    @staticmethod
    def _settle(item: _Item, result: bytes = b"", error: AppendFailed | None = None) -> None:
        future = item.future
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _observe(self, size: int, started: float, ok: bool) -> None:
        stats = self.stats
        stats.flushes += 1
        stats.entries += size
        if size > stats.max_batch:
            stats.max_batch = size
        if size > 1:
            stats.batches_over_one += 1
        if not ok:
            stats.failed_flushes += 1
        if self.observer is not None:
            self.observer(size, time.perf_counter() - started, ok)

    async def aclose(self, timeout_s: float | None = None) -> None:
        """Refuse new appends, let the queued ones flush (bounded), fail what is left."""
        self._closing = True
        drainer = self._drainer
        if drainer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(drainer), timeout_s or self.timeout_s * 2)
            except (TimeoutError, asyncio.CancelledError):
                drainer.cancel()
        for item in self._pending:
            self._settle(item, error=AppendFailed("closing", "the ingress is shutting down"))
        self._pending.clear()

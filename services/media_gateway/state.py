"""The gateway's state in Redis: session records, gateway set + heartbeat, transcripts, jobs.

Contract: ../../brief-common.md, "Cross-service contracts" (session record fields, transcript
stream, gateway liveness keys, the jobs the gateway enqueues). Keys come from
`shared.redis_keys` only.

Why buffered: a Redis outage must never disturb audio (issue 5). Call code only *records*
changes here, synchronously and without awaiting; one background task per process flushes
them in one pipeline per turn (coalescing hash fields per key), keeps what failed and retries
with backoff, so the state catches up after Redis returns. Jobs (hang-up, transfer) are kept
until arq accepts them. The one read on the call path, the media token, is bounded by a
timeout and fails the call cleanly instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from services.media_gateway import metrics
from shared import redis_keys
from shared.jobs import ARQ_SERIALIZERS, job_id

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 1.0
HEARTBEAT_TTL_S = 5
TRANSCRIPT_MAXLEN = 1000
_MAX_PENDING_LINES = 5000
_FLUSH_PAUSE_S = 0.05  # coalesce a burst of small writes into one pipeline
_RECORDS_PER_PIPELINE = 32
_BACKOFF_S = (0.25, 0.5, 1.0, 2.0)


def now_ms() -> str:
    """Unix epoch milliseconds as a decimal string (the contract's time format)."""
    return str(int(time.time() * 1000))


def connect_redis(url: str) -> ArqRedis:
    """One client for state and arq jobs; short timeouts so a dead Redis fails fast."""
    pool = ConnectionPool.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0,
                                   health_check_interval=10)
    return ArqRedis(pool, default_queue_name=redis_keys.JOB_QUEUE, **ARQ_SERIALIZERS)


class TokenStoreUnavailable(RuntimeError):
    """Redis did not answer the media-token read in time."""


@dataclass
class Heartbeat:
    """What a heartbeat reports, plus the live sessions' counters to refresh."""

    sessions: int
    ready: bool
    counters: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class _Job:
    function: str
    call_id: str
    reason: str


class StateStore:
    """Best-effort writer of one gateway's Redis state (see module docstring)."""

    def __init__(self, redis: ArqRedis, gateway_id: str, max_sessions: int,
                 heartbeat: Callable[[], Heartbeat]) -> None:
        self.redis = redis
        self.gateway_id = gateway_id
        self.max_sessions = max_sessions
        self._heartbeat_info = heartbeat
        self._hashes: dict[str, dict[str, str]] = {}
        self._members: dict[str, bool] = {}  # call_id -> in gateway_sessions?
        self._lines: deque[tuple[str, dict[str, str]]] = deque()
        self._jobs: list[_Job] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.healthy = True
        self.lines_dropped = 0
        # Job ids arq accepted, the latest few (tests, debugging): bounded, since a
        # gateway lives for weeks and enqueues a job for every call it ends itself.
        self.jobs_enqueued: deque[str] = deque(maxlen=1000)
        self._claims: list[tuple[str, str, asyncio.Future[tuple[Any, Any]]]] = []
        self._claim_task: asyncio.Task[None] | None = None

    # Recording (sync, never raises, never awaits) -------------------------------------

    def update(self, call_id: str, /, **fields: str | int) -> None:
        """Set fields of the call's session record."""
        pending = self._hashes.setdefault(call_id, {})
        for key, value in fields.items():
            pending[key] = str(value)
        self._wake.set()

    def add_member(self, call_id: str) -> None:
        self._members[call_id] = True
        self._wake.set()

    def remove_member(self, call_id: str) -> None:
        self._members[call_id] = False
        self._wake.set()

    def transcript(self, call_id: str, role: str, text: str) -> None:
        if len(self._lines) >= _MAX_PENDING_LINES:
            self._lines.popleft()
            self.lines_dropped += 1
        self._lines.append((call_id, {"role": role, "text": text, "at": now_ms()}))
        self._wake.set()

    def enqueue_job(self, function: str, call_id: str, reason: str) -> str:
        """Queue an orchestrator job (delivered until arq accepts it). Returns its id."""
        self._jobs.append(_Job(function, call_id, reason))
        self._wake.set()
        return job_id(function, call_id)

    # Reads on the call path --------------------------------------------------------------

    async def claim_media_token(self, token: str, call_id: str,
                                timeout: float = 2.0) -> tuple[dict[str, Any] | None, str]:
        """GETDEL the one-time token (contract: "Media token") and read the call's dialog id.

        Returns (token record or None, dialog_id or ""). Raises TokenStoreUnavailable.
        Claims made in the same loop turn share one pipeline (a burst of connecting calls
        would otherwise queue on the connection pool's lock: ../shared/perf-notes.md).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, Any]] = loop.create_future()
        self._claims.append((token, call_id, future))
        if self._claim_task is None or self._claim_task.done():
            self._claim_task = loop.create_task(self._claim_batches(), name="token-claims")
        try:
            async with asyncio.timeout(timeout):
                raw, dialog = await asyncio.shield(future)
        except TimeoutError:
            raise TokenStoreUnavailable(f"no answer within {timeout} s") from None
        record = None
        if raw is not None:
            try:
                parsed = orjson.loads(raw)
                record = parsed if isinstance(parsed, dict) else {}
            except orjson.JSONDecodeError:
                record = {}
        dialog_id = dialog.decode() if isinstance(dialog, bytes) else ""
        return record, dialog_id

    async def _claim_batches(self) -> None:
        await asyncio.sleep(0)  # let this loop turn's claims join the batch
        for _ in range(1000):  # bounded; claims arriving meanwhile form the next batch
            if not self._claims:
                return
            batch, self._claims = self._claims, []
            try:
                async with asyncio.timeout(2.0):
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for token, call_id, _ in batch:
                            pipe.getdel(redis_keys.media_token(token))
                            pipe.hget(redis_keys.call_record(call_id), "dialog_id")
                        results = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError, TimeoutError) as exc:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(TokenStoreUnavailable(repr(exc)))
                continue
            for i, (*_, future) in enumerate(batch):
                raw, dialog = results[2 * i], results[2 * i + 1]
                if future.done():
                    continue
                if isinstance(raw, Exception):
                    future.set_exception(TokenStoreUnavailable(repr(raw)))
                else:
                    future.set_result((raw, None if isinstance(dialog, Exception) else dialog))

    # Flushing ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="state-flusher")

    async def close(self, timeout: float = 3.0) -> None:
        """Last flush (bounded), deregister this gateway, stop the flusher."""
        self._closing = True
        self._wake.set()
        for task in (self._task, self._claim_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        try:
            async with asyncio.timeout(timeout):
                await self._flush()
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.delete(redis_keys.gateway_heartbeat(self.gateway_id))
                    pipe.delete(redis_keys.gateway_sessions(self.gateway_id))
                    pipe.srem(redis_keys.GATEWAYS, self.gateway_id)
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("final Redis flush failed: %s", exc)
        await self.redis.aclose()

    async def _run(self) -> None:
        next_beat = 0.0
        failures = 0
        loop = asyncio.get_running_loop()
        while not self._closing:  # each turn waits on an event or the next heartbeat
            wait = max(0.0, next_beat - loop.time())
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if loop.time() >= next_beat:
                    next_beat = loop.time() + HEARTBEAT_EVERY_S
                    await self._beat()
                await self._flush()
            except (RedisError, OSError, TimeoutError) as exc:
                metrics.REDIS_ERRORS.inc()
                if self.healthy:
                    log.warning("Redis unavailable, buffering gateway state: %s", exc)
                self.healthy = False
                delay = _BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)]
                failures += 1
                next_beat = min(next_beat, loop.time() + delay)
                await asyncio.sleep(delay)  # backoff, not synchronisation
                continue
            if not self.healthy:
                log.info("Redis is back; gateway state caught up")
            self.healthy = True
            failures = 0
            await asyncio.sleep(_FLUSH_PAUSE_S)

    async def _beat(self) -> None:
        info = self._heartbeat_info()
        beat = orjson.dumps({"sessions": info.sessions, "max_sessions": self.max_sessions,
                             "ready": info.ready, "pid": os.getpid(),
                             "at": int(time.time() * 1000)})
        for call_id, counters in info.counters.items():
            pending = self._hashes.setdefault(call_id, {})
            for key, value in counters.items():
                pending[key] = str(value)
        async with asyncio.timeout(2.0):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.sadd(redis_keys.GATEWAYS, self.gateway_id)
                pipe.set(redis_keys.gateway_heartbeat(self.gateway_id), beat, ex=HEARTBEAT_TTL_S)
                await pipe.execute()

    async def _flush(self) -> None:
        await self._flush_jobs()
        hashes, members, lines = self._hashes, self._members, list(self._lines)
        if not (hashes or members or lines):
            return
        self._hashes, self._members = {}, {}
        self._lines.clear()
        try:
            async with asyncio.timeout(2.0):
                # Session records go in slices: one pipeline of every live call's counters
                # (each heartbeat) is packed and parsed in one go, a stall of several ms at
                # hundreds of calls that the pacer's callers would hear. HSET/EXPIRE are
                # idempotent, so a slice rewritten after a failure is harmless.
                records = list(hashes.items())
                for start in range(0, len(records), _RECORDS_PER_PIPELINE):
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for call_id, fields in records[start:start + _RECORDS_PER_PIPELINE]:
                            key = redis_keys.session_record(call_id)
                            pipe.hset(key, mapping=fields)
                            pipe.expire(key, redis_keys.CALL_TTL_S)
                        await pipe.execute()
                if not (members or lines):
                    return
                async with self.redis.pipeline(transaction=False) as pipe:
                    sessions_key = redis_keys.gateway_sessions(self.gateway_id)
                    for call_id, present in members.items():
                        if present:
                            pipe.sadd(sessions_key, call_id)
                        else:
                            pipe.srem(sessions_key, call_id)
                    for call_id, entry in lines:
                        key = redis_keys.transcript_stream(call_id)
                        pipe.xadd(key, entry, maxlen=TRANSCRIPT_MAXLEN,
                                  approximate=True)
                        pipe.expire(key, redis_keys.CALL_TTL_S)
                    await pipe.execute()
        except BaseException:
            self._restore(hashes, members, lines)
            raise

    def _restore(self, hashes: dict[str, dict[str, str]], members: dict[str, bool],
                 lines: list[tuple[str, dict[str, str]]]) -> None:
        """Put a failed batch back *under* anything recorded since (newer values win)."""
        for call_id, fields in hashes.items():
            self._hashes[call_id] = {**fields, **self._hashes.get(call_id, {})}
        for call_id, present in members.items():
            self._members.setdefault(call_id, present)
        self._lines.extendleft(reversed(lines))
        while len(self._lines) > _MAX_PENDING_LINES:
            self._lines.popleft()
            self.lines_dropped += 1

    async def _flush_jobs(self) -> None:
        while self._jobs:
            job = self._jobs[0]
            jid = job_id(job.function, job.call_id)
            async with asyncio.timeout(2.0):
                await self.redis.enqueue_job(job.function, job.call_id, job.reason,
                                             _job_id=jid, _queue_name=redis_keys.JOB_QUEUE)
            # None means arq already holds a job with this id: delivered either way.
            self._jobs.pop(0)
            self.jobs_enqueued.append(jid)
            log.info("enqueued %s (%s)", job.function, job.reason,
                     extra={"call_id": job.call_id, "job_id": jid})

"""The gateway's state in Redis: session records, gateway set + heartbeat, transcripts, jobs.

Keys come from `callbridge.shared.redis_keys` only. What the gateway writes, for the orchestrator's
gateway-loss watchdog and `callbridge status` / `calls show` (README "Architecture"):
- the session record (`redis_keys.session_record(call_id)`), a hash: `call_id`,
  `gateway_id`, `dialog_id`, `profile`, `sample_rate`, `state` (`SessionState`),
  `started_at` / `first_audio_at` / `ended_at` (Unix epoch ms as decimal strings),
  `end_reason`, and the counters `frames_in`, `frames_out`, `barge_ins`, `truncates`;
- the transcript stream of the call (`role`, `text`, `at`), capped at TRANSCRIPT_MAXLEN;
- the gateway's liveness: its member in `redis_keys.GATEWAYS`, its set of live calls and a
  heartbeat rewritten every HEARTBEAT_EVERY_S with a new sequence number (the orchestrator's
  gateway watch judges a gateway by whether it changes; the TTL only cleans up);
- orchestrator jobs (`callbridge.shared.jobs.HANGUP_CALL`, `TRANSFER_CALL`) on the arq queue, with
  deterministic job ids (`callbridge.shared.jobs.job_id`).

Fenced writes: after a lost gateway, the orchestrator re-bridges its callers to a new media
generation (call record `media_gen`, services/call_orchestrator/rebridge.py). Every
session-record write goes through one script that writes only while the call record's
`media_gen` is still the session's own generation, so a gateway that was frozen or cut off
and comes back cannot overwrite the record of the session that replaced it: the script
answers "fenced", the store drops what it held for that call and tells the server
(`on_fenced`), which closes the session without a word to the caller.

Why buffered: a Redis outage must never disturb audio (README "Architecture", "State in
Redis, audio never waits for it"). Call code only *records* changes here, synchronously and
without awaiting; one background task per process flushes them in one pipeline per turn
(coalescing hash fields per key), keeps what failed and retries with backoff, so the state
catches up after Redis returns. Jobs (hang-up, transfer) are kept until arq accepts them.
The one read on the call path, the media token, is bounded by a timeout and fails the call
cleanly instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from callbridge.services.media_gateway import metrics
from callbridge.services.media_gateway.send_gate import SendGate
from callbridge.shared import redis_keys
from callbridge.shared.jobs import ARQ_SERIALIZERS, job_id
from callbridge.shared.redis_values import epoch_ms_text
from callbridge.shared.wire_observations import WireObservation

log = logging.getLogger(__name__)

#: A quarter second: the orchestrator declares a gateway lost after a second without a new
#: heartbeat (ORCHESTRATOR_GATEWAY_LOST_AFTER_S). One SET per gateway per beat: at 10,000
#: calls on 40 gateways, 160 small writes a second (README "Fault tolerance").
HEARTBEAT_EVERY_S = 0.25
HEARTBEAT_TTL_S = 5
#: Live calls' counters (frames, barge-ins) go to their session records this often.
COUNTERS_EVERY_S = 1.0
TRANSCRIPT_MAXLEN = 1000
_MAX_PENDING_LINES = 5000
_FLUSH_PAUSE_S = 0.05  # coalesce a burst of small writes into one pipeline
_RECORDS_PER_PIPELINE = 32
_BACKOFF_S = (0.25, 0.5, 1.0, 2.0)
#: Wire observations waiting for Redis (one per ended call); older ones are dropped first.
_MAX_PENDING_OBSERVATIONS = 64
#: Append a wire observation only while preflight has armed the gateways (one round trip,
#: no race between the check and the append).
_XADD_IF_ARMED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*',
                  'call_id', ARGV[2], 'observation', ARGV[3])
"""
#: Session-record write fenced by the media generation. KEYS[1] session record, KEYS[2]
#: call record; ARGV: the session's generation, TTL, then field/value pairs. 0: fenced.
_WRITE_IF_CURRENT = """
local current = tonumber(redis.call('HGET', KEYS[2], 'media_gen') or '0')
if current > tonumber(ARGV[1]) then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


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
                 heartbeat: Callable[[], Heartbeat],
                 on_fenced: Callable[[str], None] | None = None,
                 gate: SendGate | None = None) -> None:
        self.redis = redis
        self._on_fenced = on_fenced
        #: the pacer's gate: after a stall nothing is written until fences were checked
        self._gate = gate
        #: call id -> the media generation its session serves (writes are fenced by it)
        self._generations: dict[str, int] = {}
        self._write_if_current = redis.register_script(_WRITE_IF_CURRENT)
        self._beats = 0
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
        self._observations: deque[tuple[str, str]] = deque(maxlen=_MAX_PENDING_OBSERVATIONS)
        self._claims: list[tuple[str, str, asyncio.Future[tuple[Any, Any]]]] = []
        self._claim_task: asyncio.Task[None] | None = None

    # Recording (sync, never raises, never awaits) -------------------------------------

    def update(self, call_id: str, /, **fields: str | int) -> None:
        """Set fields of the call's session record."""
        pending = self._hashes.setdefault(call_id, {})
        for key, value in fields.items():
            pending[key] = str(value)
        self._wake.set()

    def serve(self, call_id: str, generation: int) -> None:
        """From now on the call's session-record writes are fenced by `generation`."""
        self._generations[call_id] = generation

    def forget(self, call_id: str) -> None:
        """Drop everything still held for a call (its session was fenced): record fields,
        transcript lines and jobs. Its membership of the gateway's set is removed."""
        self._hashes.pop(call_id, None)
        self._generations.pop(call_id, None)
        self._jobs = [job for job in self._jobs if job.call_id != call_id]
        self._lines = deque((c, e) for c, e in self._lines if c != call_id)
        self.remove_member(call_id)

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
        self._lines.append((call_id, {"role": role, "text": text, "at": epoch_ms_text()}))
        self._wake.set()

    def enqueue_job(self, function: str, call_id: str, reason: str) -> str:
        """Queue an orchestrator job (delivered until arq accepts it). Returns its id."""
        self._jobs.append(_Job(function, call_id, reason))
        self._wake.set()
        return job_id(function, call_id)

    def wire_observation(self, observation: WireObservation) -> None:
        """Offer a call's wire observation to `callbridge preflight`: appended to its stream
        only while preflight has armed the gateways (checked in Redis, not here, so no
        gateway needs to know). Best effort: a Redis failure drops it (it is diagnostic)."""
        fields = observation.to_stream_fields()
        self._observations.append((fields["call_id"], fields["observation"]))
        self._wake.set()

    # Reads on the call path --------------------------------------------------------------

    async def claim_media_token(self, token: str, call_id: str,
                                timeout: float = 2.0) -> tuple[bytes | None, str]:
        """GETDEL the one-time token (shared/media_tokens.py has the contract) and read the
        call's dialog id.

        Returns (the token's raw record or None, dialog_id or ""). Raises
        TokenStoreUnavailable.
        Claims made in the same loop turn share one pipeline (a burst of connecting calls
        would otherwise queue on the connection pool's lock).
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
        dialog_id = dialog.decode() if isinstance(dialog, bytes) else ""
        return (bytes(raw) if raw is not None else None), dialog_id

    async def load_history(self, call_id: str, lines: int,
                           timeout: float = 1.0) -> list[tuple[str, str]]:
        """The call's latest transcript lines, oldest first (a re-bridged call re-seeds its
        model with them). Empty when Redis does not answer in time: the call resumes without
        context rather than not at all."""
        try:
            async with asyncio.timeout(timeout):
                entries = await self.redis.xrevrange(redis_keys.transcript_stream(call_id),
                                                     count=lines)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("conversation so far unavailable (%s): resuming without it",
                        type(exc).__name__)
            return []
        history = []
        for _, fields in reversed(entries):
            role, text = fields.get(b"role", b""), fields.get(b"text", b"")
            history.append((role.decode(errors="replace"), text.decode(errors="replace")))
        return history

    async def current_generations(self, call_ids: list[str],
                                  timeout: float = 1.0) -> dict[str, int]:
        """The call records' `media_gen` (0 when unset). Raises on a Redis failure."""
        async with asyncio.timeout(timeout):
            async with self.redis.pipeline(transaction=False) as pipe:
                for call_id in call_ids:
                    pipe.hget(redis_keys.call_record(call_id), "media_gen")
                replies = await pipe.execute()
        return {call_id: int(reply or 0) for call_id, reply in zip(call_ids, replies,
                                                                       strict=True)}

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
        next_counters = 0.0
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
            if self._gate is not None and not self._gate.allows(loop.time()):
                await self._gate.wait_open()  # woken from a stall: fences first (fencing.py)
            try:
                if loop.time() >= next_beat:
                    next_beat = loop.time() + HEARTBEAT_EVERY_S
                    counters = loop.time() >= next_counters
                    if counters:
                        next_counters = loop.time() + COUNTERS_EVERY_S
                    await self._beat(counters)
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

    async def _beat(self, with_counters: bool = True) -> None:
        info = self._heartbeat_info()
        self._beats += 1
        beat = orjson.dumps({"sessions": info.sessions, "max_sessions": self.max_sessions,
                             "ready": info.ready, "pid": os.getpid(), "seq": self._beats,
                             "at": int(time.time() * 1000)})
        if with_counters:
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
        await self._flush_observations()
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
                fenced: list[str] = []
                for start in range(0, len(records), _RECORDS_PER_PIPELINE):
                    chunk = records[start:start + _RECORDS_PER_PIPELINE]
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for call_id, fields in chunk:
                            args: list[str | int] = [self._generations.get(call_id, 0),
                                                     redis_keys.CALL_TTL_S]
                            for key, value in fields.items():
                                args += [key, value]
                            await self._write_if_current(
                                keys=[redis_keys.session_record(call_id),
                                      redis_keys.call_record(call_id)],
                                args=args, client=pipe)
                        written = await pipe.execute()
                    fenced += [call_id for (call_id, _), ok in zip(chunk, written, strict=True)
                               if not ok]
                if fenced:
                    lines = [(c, e) for c, e in lines if c not in fenced]
                    for call_id in fenced:
                        self._fenced(call_id)
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

    def _fenced(self, call_id: str) -> None:
        log.warning("session fenced: the call was re-bridged away from this gateway",
                    extra={"call_id": call_id})
        metrics.FENCED.inc()
        self.forget(call_id)
        if self._on_fenced is not None:
            self._on_fenced(call_id)

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

    async def _flush_observations(self) -> None:
        while self._observations:
            call_id, observation = self._observations.popleft()
            async with asyncio.timeout(2.0):
                await self.redis.eval(
                    _XADD_IF_ARMED, 2, redis_keys.PREFLIGHT_ARMED,
                    redis_keys.WIRE_OBSERVATIONS_STREAM, redis_keys.WIRE_OBSERVATIONS_MAXLEN,
                    call_id, observation)

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


class SessionState(StrEnum):
    """The session record's `state`: `connecting` (model socket opening) -> `streaming`
    (model configured) -> `draining` (ending on purpose) -> `ended`."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    DRAINING = "draining"
    ENDED = "ended"


class CallRecord:
    """One call's record, transcript and membership of the gateway's set, recorded through
    the store (never awaits); `history` keeps the latest lines for a model re-seed."""

    __slots__ = ("call_id", "history", "store")

    def __init__(self, store: StateStore, call_id: str, history_lines: int = 60) -> None:
        self.store = store
        self.call_id = call_id
        self.history: deque[tuple[str, str]] = deque(maxlen=history_lines)

    def open(self, **fields: str | int) -> None:
        """The call is live: its first record fields, counters at zero, and a member of
        this gateway's set."""
        self.store.update(self.call_id, call_id=self.call_id, started_at=epoch_ms_text(),
                          frames_in=0, frames_out=0, barge_ins=0, truncates=0, **fields)
        self.store.add_member(self.call_id)

    def close(self, reason: str, counters: dict[str, int]) -> None:
        self.store.update(self.call_id, state=SessionState.ENDED.value, ended_at=epoch_ms_text(),
                          end_reason=reason, **counters)
        self.store.remove_member(self.call_id)

    def update(self, **fields: str | int) -> None:
        self.store.update(self.call_id, **fields)

    def line(self, role: str, text: str) -> None:
        self.history.append((role, text))
        self.store.transcript(self.call_id, role, text)

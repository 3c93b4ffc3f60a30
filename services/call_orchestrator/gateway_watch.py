"""Notice a lost media gateway within ~1.5 s and re-bridge its callers (rebridge.py).

A live gateway rewrites its heartbeat (`redis_keys.gateway_heartbeat(id)`, a JSON value with
a sequence number) every quarter second and lists its calls in `gateway_sessions(id)`. The
*leader* orchestrator (a short Redis lock, so two do not both act) reads every heartbeat
every ORCHESTRATOR_GATEWAY_CHECK_S and remembers when each one last *changed*, on its own
monotonic clock. A gateway whose heartbeat has not changed for
ORCHESTRATOR_GATEWAY_LOST_AFTER_S is lost, and each of its calls gets a `rebridge_call` job
(the same job id as Infobip's own signal, the media dialog finishing, would give it).

What must never pass for a dead gateway:
- a slow or failing Redis, or a failover: a check that fails or takes longer than a check
  interval makes this watcher blind; it forgets what it saw and starts over, so a gateway is
  only judged over a window in which Redis answered every read promptly;
- this watcher's own stall (a paused orchestrator): the same rule, measured on its clock;
- every gateway at once going quiet: with two or more gateways holding calls, that is
  Redis or the network, not the gateways: nobody is declared lost, and it is logged.
Worst case from a freeze to the jobs: LOST_AFTER (1 s) + one check (0.25 s) + one
heartbeat interval (0.25 s), the 1.5 s budget (README "Fault tolerance").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from redis.exceptions import RedisError

from callbridge.shared import redis_keys
from callbridge.shared.logging_setup import call_id_var
from callbridge.shared.redis_values import as_text, as_text_hash, epoch_ms_text

from . import call_record
from .metrics import GATEWAYS_LOST
from .rebridge import dialog_generation, request_rebridge
from .runtime import Runtime

log = logging.getLogger(__name__)

_KEEP_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""

#: Marks a lost gateway's session ended, unless the record already belongs to another
#: gateway (a re-bridge that was quicker than this watch). ARGV: now, TTL, gateway id.
_SESSION_LOST = """
if redis.call('HGET', KEYS[1], 'state') == 'ended' then return 0 end
local owner = redis.call('HGET', KEYS[1], 'gateway_id')
if owner and owner ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'ended', 'end_reason', 'gateway_lost', 'ended_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class GatewayWatch:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.interval_s = rt.settings.orchestrator_gateway_check_s
        self.lost_after_s = rt.settings.orchestrator_gateway_lost_after_s
        self.owner = uuid.uuid4().hex
        self.lock_ms = int(max(3.0, 3 * self.interval_s) * 1000)
        #: gateway id -> (its heartbeat value, when that value was first seen: monotonic)
        self._seen: dict[str, tuple[bytes | None, float]] = {}
        self._last_check: float | None = None

    async def is_leader(self) -> bool:
        return bool(await self.rt.redis.eval(_KEEP_LOCK, 1, redis_keys.GATEWAY_WATCH_LOCK,
                                             self.owner, str(self.lock_ms)))

    async def run(self) -> None:
        while True:
            try:
                if await self.is_leader():
                    await self.check_once()
                else:
                    self.forget()
            except (RedisError, OSError) as exc:
                self.forget()  # blind while Redis fails: judge nobody on stale reads
                log.warning("gateway check failed: %s", exc)
            await asyncio.sleep(self.interval_s)

    def forget(self) -> None:
        """Start observing afresh (after a failed or slow check, or a lost leadership)."""
        self._seen.clear()
        self._last_check = None

    async def release(self) -> None:
        with contextlib.suppress(Exception):
            await self.rt.redis.eval(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                "return redis.call('DEL', KEYS[1]) end return 0",
                1, redis_keys.GATEWAY_WATCH_LOCK, self.owner)

    async def check_once(self) -> int:
        """Read every heartbeat; re-bridge the calls of gateways judged lost. Returns how
        many calls were handed over."""
        redis = self.rt.redis
        started = time.monotonic()
        gateways = sorted(as_text(g) for g in await redis.smembers(redis_keys.GATEWAYS))
        if not gateways:
            return 0
        async with redis.pipeline(transaction=False) as pipe:
            for gid in gateways:
                pipe.get(redis_keys.gateway_heartbeat(gid))
                pipe.scard(redis_keys.gateway_sessions(gid))
            replies = await pipe.execute()
        now = time.monotonic()
        previous, self._last_check = self._last_check, now
        if now - started > self.interval_s or (
                previous is not None and now - previous > self.interval_s + self.lost_after_s / 2):
            # Redis (or this process) was slow: what we saw says nothing about the gateways.
            log.warning("gateway check took %.2f s (%.2f s since the last): not judging",
                        now - started, now - previous if previous else 0.0)
            self.forget()
            self._last_check = now
            return 0
        stale: list[str] = []
        holding = 0
        for i, gid in enumerate(gateways):
            beat, sessions = replies[2 * i], int(replies[2 * i + 1] or 0)
            seen = self._seen.get(gid)
            if seen is None or seen[0] != beat:
                self._seen[gid] = (beat, now)
                seen = self._seen[gid]
            if sessions:
                holding += 1
                if now - seen[1] >= self.lost_after_s:
                    stale.append(gid)
        for gid in set(self._seen) - set(gateways):
            del self._seen[gid]
        if not stale:
            return 0
        if len(stale) == holding and holding > 1:
            log.error("every gateway's heartbeat (%d) stopped at once: Redis or the network, "
                      "not the gateways; nobody is declared lost", holding)
            self.forget()
            return 0
        handled = 0
        for gid in stale:
            calls = [as_text(c) for c in await redis.smembers(redis_keys.gateway_sessions(gid))]
            log.error("gateway %s lost (heartbeat unchanged for %.1f s); re-bridging %d "
                      "caller(s)", gid, now - self._seen[gid][1], len(calls))
            for call_id in calls:
                await self._hand_over(gid, call_id)
                handled += 1
        return handled

    async def _hand_over(self, gateway_id: str, call_id: str) -> None:
        token = call_id_var.set(call_id)
        try:
            rt = self.rt
            session = as_text_hash(await rt.redis.hgetall(redis_keys.session_record(call_id)))
            owner = session.get("gateway_id")
            if owner and owner != gateway_id:
                # Already elsewhere: Infobip's own signal (the media leg finishing) was
                # quicker, and the call was re-bridged before the heartbeat ran out.
                await rt.redis.srem(redis_keys.gateway_sessions(gateway_id), call_id)
                return
            await rt.redis.eval(_SESSION_LOST, 1, redis_keys.session_record(call_id),
                                epoch_ms_text(), str(redis_keys.CALL_TTL_S), gateway_id)
            record = await call_record.load(rt.redis, call_id)
            # The generation the lost gateway served (its token's); the call's current one
            # when the gateway wrote none (a session from before generations existed).
            generation = int(session.get("media_gen") or dialog_generation(record))
            await request_rebridge(rt, call_id, generation, "gateway_lost")
            await rt.redis.srem(redis_keys.gateway_sessions(gateway_id), call_id)
            GATEWAYS_LOST.inc()
            log.warning("session of lost gateway %s handed to a re-bridge", gateway_id)
        finally:
            call_id_var.reset(token)

"""Detect crashed media gateways and free their callers (fault suite scenario 6).

A live gateway refreshes `gateway_heartbeat(id)` (EX 5) every second and lists its calls in
`gateway_sessions(id)` (common brief, "Session record"). A gateway that was SIGKILLed stops
both: its heartbeat expires within 5 s while its session set stays. Every
ORCHESTRATOR_GATEWAY_CHECK_S (1 s) the *leader* orchestrator (short Redis lock, so two
orchestrators don't both act) looks for such gateways and, for each of their calls: marks
the session record `ended` / `gateway_lost`, enqueues `transfer_call` (the profile has a
transfer number) or `hangup_call` through the normal job machinery (same deterministic ids
as the gateway would use), and removes the call from the set. Worst case from crash to the
hangup request: 5 s heartbeat TTL + 1 s check + lock handover, well inside the 10 s bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from redis.exceptions import RedisError

from callbridge.shared import redis_keys
from callbridge.shared.jobs import HANGUP_CALL, TRANSFER_CALL, job_id
from callbridge.shared.logging_setup import call_id_var

from . import call_record
from .actions import transfer_number_for
from .metrics import GATEWAYS_LOST
from .runtime import Runtime

log = logging.getLogger(__name__)

_KEEP_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""

_SESSION_LOST = """
if redis.call('HGET', KEYS[1], 'state') == 'ended' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'ended', 'end_reason', 'gateway_lost', 'ended_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class GatewayWatch:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.interval_s = rt.settings.orchestrator_gateway_check_s
        self.owner = uuid.uuid4().hex
        self.lock_ms = int(max(3.0, 3 * self.interval_s) * 1000)

    async def is_leader(self) -> bool:
        return bool(await self.rt.redis.eval(_KEEP_LOCK, 1, redis_keys.GATEWAY_WATCH_LOCK,
                                             self.owner, str(self.lock_ms)))

    async def run(self) -> None:
        while True:
            try:
                if await self.is_leader():
                    await self.check_once()
            except (RedisError, OSError) as exc:
                log.warning("gateway check failed: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def release(self) -> None:
        with contextlib.suppress(Exception):
            await self.rt.redis.eval(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                "return redis.call('DEL', KEYS[1]) end return 0",
                1, redis_keys.GATEWAY_WATCH_LOCK, self.owner)

    async def check_once(self) -> int:
        """Hand every session of every gateway without a heartbeat to hangup/transfer."""
        redis = self.rt.redis
        handled = 0
        for raw_gid in await redis.smembers(redis_keys.GATEWAYS):
            gid = _s(raw_gid)
            async with redis.pipeline(transaction=False) as pipe:
                pipe.exists(redis_keys.gateway_heartbeat(gid))
                pipe.scard(redis_keys.gateway_sessions(gid))
                alive, sessions = await pipe.execute()
            if alive or not sessions:
                continue
            calls = [_s(c) for c in await redis.smembers(redis_keys.gateway_sessions(gid))]
            log.error("gateway %s lost (no heartbeat); freeing %d caller(s)", gid, len(calls))
            for call_id in calls:
                await self._free(gid, call_id)
                handled += 1
        return handled

    async def _free(self, gateway_id: str, call_id: str) -> None:
        token = call_id_var.set(call_id)
        try:
            rt = self.rt
            await rt.redis.eval(_SESSION_LOST, 1, redis_keys.session_record(call_id),
                                call_record.now_ms(), str(redis_keys.CALL_TTL_S))
            record = await call_record.load(rt.redis, call_id)
            if transfer_number_for(rt, record):
                await rt.enqueue(TRANSFER_CALL, call_id, "gateway_lost",
                                 job_id=job_id(TRANSFER_CALL, call_id))
            else:
                await rt.enqueue(HANGUP_CALL, call_id, "gateway_lost",
                                 job_id=job_id(HANGUP_CALL, call_id))
            await rt.redis.srem(redis_keys.gateway_sessions(gateway_id), call_id)
            GATEWAYS_LOST.inc()
            log.warning("session of lost gateway %s handed to the orchestrator", gateway_id)
        finally:
            call_id_var.reset(token)

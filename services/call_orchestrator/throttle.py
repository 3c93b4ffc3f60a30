"""A shared "not before" gate per Calls API scope, set from the platform's Retry-After.

Why shared: the Calls API throttles per account (20 dialog requests/s, reference
Infobip's Calls API reference (https://www.infobip.com/docs/api) "REST"), so a 429 with Retry-After
on POST /calls/1/dialogs means *nobody* on this account should create a dialog before then, not only
the job that got it. The gate lives in Redis (`redis_keys.api_throttle`) so every
orchestrator process obeys it; a process-local copy avoids a Redis round trip while a gate
this process already knows about is closed. An open gate costs one GET per request.
"""

from __future__ import annotations

from redis.asyncio import Redis

from callbridge.shared import redis_keys
from callbridge.shared.redis_values import epoch_ms


class ThrottleGate:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._local: dict[str, int] = {}

    async def wait_s(self, scope: str) -> float:
        """Seconds until requests on `scope` are allowed again (0 when allowed now)."""
        now = epoch_ms()
        local = self._local.get(scope, 0)
        if local > now:
            return (local - now) / 1000
        raw = await self._redis.get(redis_keys.api_throttle(scope))
        if raw is None:
            return 0.0
        until = int(raw)
        self._local[scope] = until
        return max(0.0, (until - epoch_ms()) / 1000)

    async def close_for(self, scope: str, seconds: float) -> None:
        """Hold every request on `scope` for `seconds` (never shortens a longer gate)."""
        until = epoch_ms() + int(seconds * 1000)
        if until <= self._local.get(scope, 0):
            return
        self._local[scope] = until
        key = redis_keys.api_throttle(scope)
        # Keep the later of the stored and the new time; the key expires with the gate.
        await self._redis.eval(
            "local cur = tonumber(redis.call('GET', KEYS[1]) or '0') "
            "if tonumber(ARGV[1]) > cur then "
            "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end return 1",
            1, key, str(until), str(max(1, int(seconds * 1000)) + 1000),
        )

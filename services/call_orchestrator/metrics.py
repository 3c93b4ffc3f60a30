"""Prometheus metrics and the /healthz, /readyz, /metrics server of an orchestrator process.

One private registry per process (module level): two orchestrators in one test process
share it, which is harmless for counters and avoids duplicate-registration errors.
`/healthz` answers while the event loop turns; `/readyz` only while Redis answers and the
process still consumes (false from the first moment of a SIGTERM, so a load balancer or
supervisor stops counting on it before it drains).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from redis.asyncio import Redis

from callbridge.shared import health, redis_keys

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()

JOBS = Counter("callbridge_orchestrator_jobs_total", "Jobs finished, by job and outcome "
               "(ok, noop, retry, dead_letter)", ["job", "outcome"], registry=REGISTRY)
RETRIES = Counter("callbridge_orchestrator_retries_total", "Retries scheduled, by job and reason",
                  ["job", "reason"], registry=REGISTRY)
EVENTS = Counter("callbridge_orchestrator_events_total", "Stream entries handed to arq, by result "
                 "(enqueued, duplicate, invalid)", ["result"], registry=REGISTRY)
LOCAL_STARTS = Counter("callbridge_orchestrator_local_starts_total", "Jobs this process enqueued: "
                       "started at once (taken) or left to the queue poll (queued)",
                       ["result"], registry=REGISTRY)
API_LATENCY = Histogram(
    "callbridge_orchestrator_calls_api_seconds", "Calls API request latency by endpoint and status",
    ["endpoint", "status"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DIALOG_LATENCY = Histogram(
    "callbridge_orchestrator_webhook_to_dialog_seconds",
    "Webhook received (ingress) to dialog request sent", registry=REGISTRY,
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5))
STREAM_LAG = Gauge("callbridge_orchestrator_stream_lag", "Entries in the events stream not yet "
                   "delivered to the consumer group (XINFO GROUPS lag)", registry=REGISTRY)
STREAM_PENDING = Gauge("callbridge_orchestrator_stream_pending", "Entries delivered but not yet "
                       "acknowledged (XINFO GROUPS pending)", registry=REGISTRY)
DEAD_LETTERS = Gauge("callbridge_orchestrator_dead_letters", "Entries in the dead-letter stream",
                     registry=REGISTRY)
API_BASE_REFUSED = Counter(
    "callbridge_orchestrator_api_base_refused_total",
    "Webhook apiBaseUrl values not used (not Infobip's: the configured base URL was used "
    "instead), by reason (malformed, not_https, port, path, userinfo, host)",
    ["reason"], registry=REGISTRY)
UNBRIDGED = Counter("callbridge_orchestrator_calls_unbridged_total",
                    "Calls that ended before a dialog could be created for them (the caller "
                    "hung up while their call was still waiting to be bridged)",
                    registry=REGISTRY)
REBRIDGES = Counter("callbridge_orchestrator_rebridges_total",
                    "Re-bridges of callers whose media gateway was lost, by outcome (ok, "
                    "exhausted, refused, caller_gone)", ["outcome"])
GATEWAYS_LOST = Counter("callbridge_orchestrator_gateway_sessions_lost_total",
                        "Calls of crashed gateways handed to hangup/transfer",
                        registry=REGISTRY)


async def sample_stream_gauges(redis: Redis) -> None:
    """Refresh lag / pending / dead-letter gauges (a few cheap commands)."""
    groups = await redis.xinfo_groups(redis_keys.EVENTS_STREAM)
    for group in groups:
        name = group.get("name")
        if name in (redis_keys.EVENTS_GROUP, redis_keys.EVENTS_GROUP.encode()):
            STREAM_PENDING.set(group.get("pending") or 0)
            lag = group.get("lag")
            STREAM_LAG.set(lag if lag is not None else 0)
    DEAD_LETTERS.set(await redis.xlen(redis_keys.DEAD_LETTER_STREAM))


async def gauge_loop(redis: Redis, interval_s: float = 5.0) -> None:
    while True:
        with contextlib.suppress(Exception):
            await sample_stream_gauges(redis)
        await asyncio.sleep(interval_s)


ReadyCheck = Callable[[], Awaitable[bool]]


def create_health_app(ready: ReadyCheck) -> web.Application:
    """aiohttp app: /healthz (alive), /readyz (`ready()`), /metrics (Prometheus text)."""

    def answer(probe: health.ProbeAnswer) -> web.Response:
        return web.Response(status=probe.status, body=probe.body,
                            headers={"Content-Type": probe.content_type})

    async def healthz(_: web.Request) -> web.Response:
        return answer(health.alive())

    async def readyz(_: web.Request) -> web.Response:
        try:
            ok = await asyncio.wait_for(ready(), 2.0)
        except Exception:
            ok = False
        return answer(health.ready() if ok else health.not_ready("not_serving"))

    async def metrics(_: web.Request) -> web.Response:
        return answer(health.metrics(REGISTRY))

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_health_server(ready: ReadyCheck, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(create_health_app(ready), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (useful with port 0 in tests)."""
    for addr in runner.addresses:
        return int(addr[1])
    return 0

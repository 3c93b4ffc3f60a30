"""One orchestrator process: stream consumer + arq worker + gateway watch + health server,
in one event loop, with one lifecycle (start -> serve -> drain on SIGTERM -> close).

Why one loop: the consumer hands each fresh job straight to the worker of the same process
(worker.py), which is what makes the latency target reachable without fast polling.
Shutdown order: readiness false and the consumer stops reading (its current batch is
enqueued and acknowledged), the worker stops picking jobs, in-flight jobs get
ORCHESTRATOR_SHUTDOWN_GRACE_S to finish (arq re-runs any that are cut, on another worker),
then connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web
from arq.connections import ArqRedis, RedisSettings, create_pool

from callbridge.shared.jobs import ARQ_SERIALIZERS
from callbridge.shared.redis_values import process_name

from .config import OrchestratorSettings
from .consumer import StreamConsumer
from .gateway_watch import GatewayWatch
from .kill_points import warn_if_armed
from .lease import ProcessLease
from .metrics import bound_port, gauge_loop, start_health_server
from .runtime import Runtime, build_runtime
from .worker import OrchestratorWorker, build_worker

log = logging.getLogger(__name__)


async def connect_redis(url: str) -> ArqRedis:
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 2
    return await create_pool(settings, **ARQ_SERIALIZERS)


class Orchestrator:
    """Start with `await start()`, stop with `await stop()`; `port` is the health port."""

    def __init__(self, settings: OrchestratorSettings, consumer_name: str | None = None,
                 metrics: bool = True) -> None:
        self.settings = settings
        self.consumer_name = consumer_name
        self.metrics_enabled = metrics
        self.rt: Runtime | None = None
        self.worker: OrchestratorWorker | None = None
        self.consumer: StreamConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._watch: GatewayWatch | None = None
        self._consumer_task: asyncio.Task[None] | None = None
        self._lease: ProcessLease | None = None
        self._draining = False
        self.port = 0

    async def ready(self) -> bool:
        if self._draining or self.rt is None or self.consumer is None:
            return False
        await self.rt.redis.ping()
        return self.consumer.running

    async def start(self) -> None:
        s = self.settings
        warn_if_armed()
        redis = await connect_redis(s.redis_url)
        self.rt = rt = await build_runtime(s, redis)
        name = self.consumer_name or s.orchestrator_consumer_name or process_name()
        # Alive before anything is claimed or read: others judge our claims by this lease.
        rt.lease = self._lease = ProcessLease(redis, name, s.orchestrator_lease_s)
        await self._lease.renew()
        self._tasks.append(asyncio.create_task(self._lease.run(), name="lease"))
        self.worker = build_worker(rt, redis)
        self.worker.main_task = asyncio.create_task(self.worker.main(), name="arq-worker")
        self._tasks.append(self.worker.main_task)
        self.consumer = StreamConsumer(rt, name)
        self._watch = GatewayWatch(rt)
        self._consumer_task = asyncio.create_task(self.consumer.run(), name="stream-consumer")
        self._tasks += [self._consumer_task,
                        asyncio.create_task(self.consumer.watch_dead(s.orchestrator_lease_s),
                                            name="dead-consumers"),
                        asyncio.create_task(self._watch.run(), name="gateway-watch"),
                        asyncio.create_task(gauge_loop(redis), name="gauges")]
        if self.metrics_enabled:
            self._runner = await start_health_server(self.ready, s.orchestrator_metrics_host,
                                                     s.orchestrator_metrics_port)
            self.port = bound_port(self._runner)
        log.info("orchestrator started", extra={"consumer": self.consumer.name,
                                                "health_port": self.port})

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful: stop consuming, let in-flight jobs finish (bounded), close."""
        grace = self.settings.orchestrator_shutdown_grace_s if grace_s is None else grace_s
        self._draining = True
        if self.consumer is not None:
            self.consumer.stop()
        worker = self.worker
        if worker is not None:
            worker.allow_pick_jobs = False
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            while loop.time() < deadline and any(not t.done() for t in worker.tasks.values()):
                await asyncio.wait([t for t in worker.tasks.values() if not t.done()],
                                   timeout=max(0.0, deadline - loop.time()))
        consumer_task = self._consumer_task
        if consumer_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(consumer_task),
                                       self.settings.orchestrator_block_ms / 1000 + 2)
        if self._watch is not None:
            await self._watch.release()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
        if self.rt is not None:
            await self.rt.api.close()
        if self._lease is not None:
            # Last thing before the pool closes: what is left pending is taken over now.
            await self._lease.release()
        if worker is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await worker.close()  # cancels what did not finish; closes the Redis pool
        log.info("orchestrator stopped")

    async def kill_for_tests(self) -> None:
        """Abrupt stop (no drain), for tests that simulate a crash in-process."""
        await self.stop(grace_s=0)


async def serve(settings: OrchestratorSettings) -> None:
    """Run until SIGTERM/SIGINT, then drain (the `callbridge orchestrator` process)."""
    orchestrator = Orchestrator(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await orchestrator.start()
    await stop.wait()
    log.info("shutdown signal: draining")
    await orchestrator.stop()

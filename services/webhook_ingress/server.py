"""Run the ingress: AppRunner + TCPSite(reuse_port=True), graceful SIGTERM.

`reuse_port` (SO_REUSEPORT) lets several ingress processes bind the same port; the kernel
spreads new connections across them, so scaling out is "start another process".

SIGTERM / SIGINT, in this order:
1. readiness goes false (/readyz 503) and stays so for INGRESS_DRAIN_DELAY_S while we keep
   serving, so the load balancer stops sending new requests first;
2. the listener closes and in-flight requests finish (bounded by INGRESS_SHUTDOWN_TIMEOUT_S),
   each still answered only after its XADD was acknowledged;
3. the appender flushes what is queued and the Redis pool closes (the app's cleanup_ctx).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from callbridge.services.webhook_ingress.app import PersistenceError, create_app
from callbridge.services.webhook_ingress.config import IngressSettings
from callbridge.services.webhook_ingress.state import STATE
from callbridge.shared.event_loop import loop_factory
from callbridge.shared.logging_setup import redact, setup_logging

log = logging.getLogger(__name__)


async def serve(settings: IngressSettings, stop: asyncio.Event | None = None,
                on_ready: Callable[[list[str]], None] | None = None,
                app: web.Application | None = None) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT when `stop` is None), then drain."""
    app = app if app is not None else create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=settings.ingress_shutdown_timeout_s)
    await runner.setup()
    loop = asyncio.get_running_loop()
    own_signals = stop is None
    stop = stop or asyncio.Event()
    try:
        site = web.TCPSite(runner, settings.ingress_host, settings.ingress_port,
                           reuse_port=True, backlog=1024)
        await site.start()
        addresses = [f"{host}:{port}" for host, port, *_ in runner.addresses]
        if own_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        log.info("ingress listening", extra={
            "addresses": addresses, "path": settings.webhook_path,
            "coalesce": settings.ingress_coalesce, "redis": redact(settings.redis_url)})
        if on_ready is not None:
            on_ready(addresses)
        await stop.wait()
        log.info("shutdown requested: readiness false, draining",
                 extra={"drain_delay_s": settings.ingress_drain_delay_s})
        if STATE in app:
            app[STATE].shutting_down = True
        if settings.ingress_drain_delay_s > 0:
            # Deliberate wall-clock wait (not synchronisation): the load balancer needs a
            # few health-check periods to see /readyz fail while we still serve.
            await asyncio.sleep(settings.ingress_drain_delay_s)
    finally:
        if own_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        await runner.cleanup()
        log.info("ingress stopped")


def run(settings: IngressSettings) -> int:
    """Process entry point (the `callbridge ingress` command)."""
    setup_logging("webhook_ingress", settings.log_level, settings.log_format)
    with asyncio.Runner(loop_factory=loop_factory(settings.ingress_uvloop)) as runner:
        try:
            runner.run(serve(settings))
        except PersistenceError as exc:
            log.error("refusing to start: %s", exc)
            return 2
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", settings.ingress_host,
                      settings.ingress_port, exc)
            return 1
    return 0

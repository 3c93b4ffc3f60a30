"""The server side of the benchmark, one variant per process (pinned to one core by run.py).

  durable  - create_app() as shipped: XADDs coalesced into one pipeline per loop turn
  single   - the same app with INGRESS_COALESCE=false: one awaited XADD per request
  noop     - a bare aiohttp handler that reads the body and answers 200 (stores nothing)

All three run through callbridge.services.webhook_ingress.server.serve (same runner, same uvloop
choice), so the only difference is the handler's work. Prints `READY <port>` when listening.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web

from callbridge.services.webhook_ingress.config import IngressSettings
from callbridge.services.webhook_ingress.server import serve
from callbridge.shared.event_loop import loop_factory
from callbridge.shared.logging_setup import setup_logging

VARIANTS = ("durable", "single", "noop")


async def _noop(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


def noop_app(path: str) -> web.Application:
    app = web.Application()
    app.router.add_post(path, _noop)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--events-maxlen", type=int, default=100_000)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    settings = IngressSettings(
        ingress_host="127.0.0.1", ingress_port=args.port, redis_url=args.redis_url,
        ingress_coalesce=args.variant != "single", events_maxlen=args.events_maxlen,
        ingress_drain_delay_s=0, ingress_uvloop=not args.no_uvloop, log_level="WARNING",
        # Explicit choices of a benchmark (both warned at start): it measures the store
        # path without authentication, and compares AOF policies including "no".
        webhook_allow_unauthenticated=True, ingress_require_aof=False,
    )
    setup_logging("bench-ingress", "WARNING", "json")
    app = noop_app(settings.webhook_path) if args.variant == "noop" else None

    def ready(addresses: list[str]) -> None:
        print(f"READY {args.port}", flush=True)

    with asyncio.Runner(loop_factory=loop_factory(settings.ingress_uvloop)) as runner:
        runner.run(serve(settings, on_ready=ready, app=app))
    return 0


if __name__ == "__main__":
    sys.exit(main())

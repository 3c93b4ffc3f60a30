"""On-call commands: `callbridge status`, `callbridge calls show`, `callbridge setup`."""

from __future__ import annotations

import argparse
from typing import Any

STATUS_HELP = """\
Live calls (call id, gateway, state, duration), gateways with heartbeat and load, the events
stream's length and consumer lag, pending and dead-lettered counts. Read from Redis only
(REDIS_URL), so it works while any service is down.

examples:
  callbridge status
  callbridge status --watch 1        refresh every second
  callbridge status --json | jq .gateways
"""

CALLS_HELP = """\
Everything Redis knows about one call: its events (from the events stream), the orchestrator's
call record and jobs, the media session record and the transcript.

The events stream is indexed by time, not by call: it is searched newest-first, in pages,
up to --scan entries (default 20000), so the command never blocks Redis for long; the output
says when the bound was hit. Jobs are looked up by their deterministic ids, never by KEYS.

examples:
  callbridge calls show 3b1f6a0e-...
  callbridge calls show 3b1f6a0e-... --scan 500000    an older call in a long stream
"""

SETUP_HELP = """\
Create or find (by name, idempotently) the media-stream configuration at the Calls API that
points Infobip at your gateway's public WebSocket URL, print the id to set as
INFOBIP_MEDIA_STREAM_CONFIG_ID, and the webhook subscription the account needs.
Needs INFOBIP_BASE_URL and INFOBIP_API_KEY (scope calls:manage).

examples:
  callbridge setup --public-url wss://voice.example.com/media --dry-run
  callbridge setup --public-url wss://voice.example.com/media --sample-rate 16000
"""


def register(sub: Any) -> None:
    status = sub.add_parser("status", help="live calls, gateways, stream lag, dead letters",
                            description=STATUS_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every N s")
    status.set_defaults(func=status_main)

    calls = sub.add_parser("calls", help="inspect one call", description=CALLS_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    calls_sub = calls.add_subparsers(dest="calls_command", required=True)
    show = calls_sub.add_parser("show", help="a call's timeline, jobs, session and transcript")
    show.add_argument("call_id")
    show.add_argument("--json", action="store_true")
    show.add_argument("--scan", type=_positive_int, default=None, metavar="N",
                      help="search at most the newest N stream entries (default 20000)")
    show.set_defaults(func=calls_show_main)

    setup = sub.add_parser("setup", help="create/find the media-stream config at Infobip",
                           description=SETUP_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    setup.add_argument("--public-url", required=True, help="wss:// URL Infobip connects to")
    setup.add_argument("--name", default="callbridge-gateway", help="config name (idempotency)")
    setup.add_argument("--sample-rate", type=int, default=24000,
                       choices=(8000, 16000, 24000, 32000))
    setup.add_argument("--webhook-url", help="public URL of the ingress (for the printout)")
    setup.add_argument("--dry-run", action="store_true", help="show the requests only")
    setup.add_argument("--update", action="store_true", help="repoint an existing config")
    setup.set_defaults(func=setup_main)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _redis_client() -> Any:
    import redis.asyncio as aioredis

    from shared.settings import CommonSettings, load_settings

    return aioredis.Redis.from_url(load_settings(CommonSettings).redis_url,
                                   socket_connect_timeout=3, socket_timeout=5)


def _redis_down(exc: Exception) -> SystemExit:
    from shared.logging_setup import redact

    return SystemExit(f"cannot reach Redis ({exc.__class__.__name__}: {redact(str(exc))}): "
                      "check REDIS_URL and that Redis is running.")


def status_main(args: argparse.Namespace) -> int:
    import asyncio

    import orjson
    import redis

    from services.ops.status import collect_status, render_status

    async def run() -> None:
        client = _redis_client()
        try:
            while True:
                status = await collect_status(client)
                if args.json:
                    print(orjson.dumps(status).decode(), flush=True)
                else:
                    if args.watch:
                        print("\033[2J\033[H", end="")
                    print(render_status(status), flush=True)
                if not args.watch:
                    return
                await asyncio.sleep(args.watch)  # the refresh period the user asked for
        finally:
            await client.aclose()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise _redis_down(exc) from None
    return 0


def calls_show_main(args: argparse.Namespace) -> int:
    import asyncio

    import orjson
    import redis

    from services.ops.status import DEFAULT_SCAN_LIMIT, collect_call, render_call

    async def run() -> dict[str, Any]:
        client = _redis_client()
        try:
            return await collect_call(client, args.call_id, args.scan or DEFAULT_SCAN_LIMIT)
        finally:
            await client.aclose()

    try:
        info = asyncio.run(run())
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise _redis_down(exc) from None
    print(orjson.dumps(info).decode() if args.json else render_call(info))
    return 0 if info["events"] or info["call"] or info["session"] else 1


def setup_main(args: argparse.Namespace) -> int:
    import asyncio

    from services.ops.setup import WEBHOOK_EVENTS, SetupError, find_or_create
    from shared.settings import InfobipSettings, load_settings

    if not args.public_url.startswith(("wss://", "ws://")):
        raise SystemExit("--public-url must be a ws:// or wss:// URL (Infobip connects to it)")
    settings = load_settings(InfobipSettings, infobip_media_stream_config_id="(unused)")
    try:
        config_id = asyncio.run(find_or_create(
            settings.infobip_base_url, settings.infobip_api_key.get_secret_value(), args.name,
            args.public_url, args.sample_rate, args.dry_run, args.update))
    except SetupError as exc:
        raise SystemExit(f"callbridge setup: {exc}") from None
    if config_id:
        print(f"\nset INFOBIP_MEDIA_STREAM_CONFIG_ID={config_id}")
    print("\nwebhook subscription the account needs (Infobip portal or Subscriptions API):")
    print("  channel: VOICE_VIDEO")
    print(f"  events:  {', '.join(WEBHOOK_EVENTS)}")
    print(f"  url:     {args.webhook_url or '<your public ingress URL>/webhook'}")
    print("  security: BASIC or HMAC (SHA-256), matching WEBHOOK_* settings of the ingress")
    return 0

"""On-call commands: `callbridge status`, `callbridge calls show`, `callbridge setup`,
`callbridge preflight`."""

from __future__ import annotations

import argparse
from typing import Any

from callbridge.shared.infobip_media import INFOBIP_RATES

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


PREFLIGHT_HELP = """\
Run once with the real credentials before going live. Each check says what it found and,
when something is wrong, the command or setting that fixes it. Secrets are never printed.

checks:
  openai     For each agent profile (AGENT_PROFILES_FILE, else the built-in default), open
             a Realtime socket exactly as the media gateway does and send its session.update
             (same builder, same tools). Prints what session.updated puts in effect (voice,
             start of the instructions and their length, tools, turn detection, audio
             formats), or the exact error event (code, message, param) and close code.
             Needs OPENAI_API_KEY (OPENAI_REALTIME_URL, OPENAI_MODEL as the gateway).
  infobip    Checks the Calls API key's scopes by listing media-stream configs
             (calls:configuration:manage or calls:manage) and reading a call
             (calls:logs:read or calls:manage), then finds the WEBSOCKET_ENDPOINT config
             `callbridge setup` creates (--config-name) and compares its URL (--public-url)
             and sampleRate (--sample-rate): found, missing or mismatched, with the setup
             command that fixes it. Needs INFOBIP_BASE_URL and INFOBIP_API_KEY
             (INFOBIP_MEDIA_STREAM_CONFIG_ID, when set, must name that config).
  capture    --capture-call: arms every media gateway through Redis (REDIS_URL) for
             --timeout seconds, asks you to call --number (talk, interrupt the agent once,
             stay silent ~15 s, hang up), waits for that call and prints, for each protocol
             assumption of docs/protocol-assumptions.md (media token location, content
             type and rate, continuous inbound audio, pong replies, clear acknowledged,
             apiBaseUrl form), what was expected, what the wire showed, and whether it held.
             Needs the deployed stack running (ingress, orchestrator, gateways) and Redis.
             Ctrl-C disarms the gateways.

exit codes:
  0  every check ran and everything held
  1  a check ran and found a problem (config missing or mismatched, session.update refused,
     an assumption that did not hold or that the call did not exercise)
  2  a check could not run: settings missing, credentials refused, a host or Redis
     unreachable, no call (or no observation of it) before --timeout
  130  interrupted (Ctrl-C); the gateways were disarmed

examples:
  callbridge preflight --public-url wss://voice.example.com/media
  callbridge preflight --only openai
  callbridge preflight --public-url wss://voice.example.com/media --capture-call \\
      --number +441134960001
  callbridge preflight --only capture --json > first-call.json
"""

PREFLIGHT_CHECKS = ("openai", "infobip", "capture")


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
                       choices=INFOBIP_RATES)
    setup.add_argument("--webhook-url", help="public URL of the ingress (for the printout)")
    setup.add_argument("--dry-run", action="store_true", help="show the requests only")
    setup.add_argument("--update", action="store_true", help="repoint an existing config")
    setup.set_defaults(func=setup_main)

    preflight = sub.add_parser(
        "preflight", help="check credentials and prove the protocol on a first live call",
        description=PREFLIGHT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    preflight.add_argument("--only", type=_check_list, metavar="CHECKS",
                           help="comma separated subset of openai,infobip,capture "
                                "(default: openai,infobip, plus capture with --capture-call)")
    preflight.add_argument("--capture-call", action="store_true",
                           help="arm the gateways and report the next call's wire")
    preflight.add_argument("--number", default="your Infobip number",
                           help="the number to call, for the instructions printed")
    preflight.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                           help="how long the gateways stay armed and preflight waits (600)")
    preflight.add_argument("--public-url", help="the gateway's public wss:// URL, compared "
                                                "with the media-stream config")
    preflight.add_argument("--config-name", default="callbridge-gateway",
                           help="name of the media-stream config (as `callbridge setup`)")
    preflight.add_argument("--sample-rate", type=int, default=24000,
                           choices=INFOBIP_RATES,
                           help="the config's expected sampleRate (24000)")
    preflight.add_argument("--json", action="store_true", help="one JSON document on stdout")
    preflight.set_defaults(func=preflight_main)


def _check_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in PREFLIGHT_CHECKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"choose from {', '.join(PREFLIGHT_CHECKS)} (got {text!r})")
    return names


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _redis_client() -> Any:
    import redis.asyncio as aioredis

    from callbridge.shared.settings import CommonSettings, load_settings

    return aioredis.Redis.from_url(load_settings(CommonSettings).redis_url,
                                   socket_connect_timeout=3, socket_timeout=5)


def _redis_down(exc: Exception) -> SystemExit:
    from callbridge.shared.logging_setup import redact

    return SystemExit(f"cannot reach Redis ({exc.__class__.__name__}: {redact(str(exc))}): "
                      "check REDIS_URL and that Redis is running.")


def status_main(args: argparse.Namespace) -> int:
    import asyncio

    import orjson
    import redis

    from callbridge.services.ops.status import collect_status, render_status

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

    from callbridge.services.ops.status import DEFAULT_SCAN_LIMIT, collect_call, render_call

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

    from callbridge.services.ops.setup import WEBHOOK_EVENTS, SetupError, find_or_create
    from callbridge.shared.settings import InfobipSettings, load_settings

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
    print("  security: BASIC (supported default; HMAC only once a captured delivery confirms "
          "its format, docs/protocol-assumptions.md), matching the ingress's WEBHOOK_* settings")
    return 0


def preflight_main(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from callbridge.services.ops.preflight import exit_code, render, run_preflight, to_json

    checks_wanted = args.only or (("openai", "infobip", "capture") if args.capture_call
                                  else ("openai", "infobip"))
    if args.public_url and not args.public_url.startswith(("wss://", "ws://")):
        raise SystemExit("--public-url must be a ws:// or wss:// URL (Infobip connects to it)")
    out = sys.stderr if args.json else sys.stdout

    def progress(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        checks = asyncio.run(run_preflight(
            checks_wanted, number=args.number, timeout_s=args.timeout,
            public_url=args.public_url, config_name=args.config_name,
            sample_rate=args.sample_rate, progress=progress))
    except KeyboardInterrupt:
        print("\npreflight interrupted; the gateways were disarmed.", file=sys.stderr)
        return 130
    if args.json:
        sys.stdout.write(to_json(checks).decode() + "\n")
    else:
        print(render(checks))
    return exit_code(checks)

"""`callbridge orchestrator`, `callbridge replay`, `callbridge dead-letters ...`.

Only parses and hands over; heavy imports happen inside the command functions so that
`callbridge --help` stays fast. Tool commands need only REDIS_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from callbridge.shared.settings_help import SettingsHelpFormatter

RAW = argparse.RawDescriptionHelpFormatter

ORCH_HELP = """\
Run one call orchestrator process: it consumes the webhook events stream (consumer group
`orchestrator`), runs the arq jobs that create dialogs, hang up and transfer callers,
watches media gateways' heartbeats, and serves /healthz, /readyz and /metrics.
Run several for capacity and redundancy: each event is handled once, each call gets
exactly one dialog. SIGTERM drains: stop consuming, finish in-flight jobs, exit.

Settings come from the environment or .env; their defaults (README "Configuration"):
@settings callbridge.services.call_orchestrator.config:OrchestratorSettings

examples:
  callbridge orchestrator
  ORCHESTRATOR_METRICS_PORT=9102 callbridge orchestrator --consumer-name orch-2
"""

REPLAY_HELP = """\
Re-run events from the events stream through the same idempotency guards as live traffic:
replaying events that were already handled does nothing harmful (their job ids are
refused as duplicates, or the job finds the call already bridged/ended). Filters combine.

examples:
  callbridge replay --since 15m --dry-run                 # what arrived in the last 15 min
  callbridge replay --call-id 3d2f... --type CALL_RECEIVED
  callbridge replay --from-id 1718000000000-0 --to-id 1718000600000-0
  callbridge replay --since 2026-01-15T12:00:00Z --until 2026-01-15T12:10:00Z
  callbridge replay --force --call-id 3d2f... --type CALL_RECEIVED --yes
      # bypass the guards for ONE call: a new dialog WILL be requested if it is still up
"""

DL_HELP = """\
Jobs that failed for good (a 4xx from the Calls API, or retries exhausted) land in the
dead-letter stream with the event, the attempts and the last error.

examples:
  callbridge dead-letters list
  callbridge dead-letters list --json | jq .
  callbridge dead-letters replay 1718000000000-0     # re-enqueue, remove on success
  callbridge dead-letters replay --all
  callbridge dead-letters purge --older-than 7d --yes
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("orchestrator", help="run a call orchestrator process",
                              description=ORCH_HELP,
                              formatter_class=SettingsHelpFormatter)
    p.add_argument("--consumer-name", help="name in the consumer group (default host-pid)")
    p.set_defaults(func=_orchestrator)

    r = subparsers.add_parser("replay", help="re-enqueue events from the events stream",
                              description=REPLAY_HELP, formatter_class=RAW)
    r.add_argument("--from-id", help="first stream id (inclusive), e.g. 1718000000000-0")
    r.add_argument("--to-id", help="last stream id (inclusive)")
    r.add_argument("--since", help="ISO time or relative (15m, 2h, 7d ago)")
    r.add_argument("--until", help="ISO time or relative")
    r.add_argument("--call-id", help="only events about this call")
    r.add_argument("--type", action="append", default=[], dest="types", metavar="TYPE",
                   help="only this event type (repeatable)")
    r.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    r.add_argument("--force", action="store_true",
                   help="with --call-id: clear that call's guards first (re-bridges it)")
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    r.set_defaults(func=_replay)

    d = subparsers.add_parser("dead-letters", help="list, replay or purge dead letters",
                              description=DL_HELP, formatter_class=RAW)
    dsub = d.add_subparsers(dest="dl_command", metavar="ACTION", required=True)
    dl = dsub.add_parser("list", help="show dead letters", description=DL_HELP,
                         formatter_class=RAW)
    dl.add_argument("--json", action="store_true", help="one JSON array on stdout")
    dl.set_defaults(func=_dl_list)
    dr = dsub.add_parser("replay", help="re-enqueue dead letters", description=DL_HELP,
                         formatter_class=RAW)
    dr.add_argument("ids", nargs="*", help="dead-letter entry ids")
    dr.add_argument("--all", action="store_true", help="every dead letter")
    dr.set_defaults(func=_dl_replay)
    dp = dsub.add_parser("purge", help="delete dead letters", description=DL_HELP,
                         formatter_class=RAW)
    dp.add_argument("--older-than", help="only those older than this (e.g. 7d)")
    dp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    dp.set_defaults(func=_dl_purge)


def _orchestrator(args: argparse.Namespace) -> int:
    from callbridge.shared.logging_setup import setup_logging
    from callbridge.shared.settings import load_settings

    from .config import OrchestratorSettings
    from .service import serve

    settings = load_settings(OrchestratorSettings)
    if args.consumer_name:
        settings.orchestrator_consumer_name = args.consumer_name
    setup_logging("orchestrator", settings.log_level, settings.log_format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(settings))
    return 0


def _run_tool(body: Callable[[Any], Awaitable[int]]) -> int:
    """Connect to REDIS_URL, run `body(redis)`, turn an unreachable Redis into advice."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from callbridge.shared.logging_setup import redact
    from callbridge.shared.settings import CommonSettings, load_settings

    settings = load_settings(CommonSettings)

    async def main() -> int:
        from arq.connections import RedisSettings, create_pool

        from callbridge.shared.jobs import ARQ_SERIALIZERS

        rs = RedisSettings.from_dsn(settings.redis_url)
        rs.conn_retries = 0
        redis = await create_pool(rs, **ARQ_SERIALIZERS)
        try:
            return await body(redis)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(main())
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        sys.stderr.write(
            f"callbridge: cannot reach Redis at {redact(settings.redis_url)} "
            f"({redact(str(exc))}).\n"
            "Check REDIS_URL (environment or .env) and that Redis is running, then retry.\n")
        return 3


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        sys.stderr.write(f"{question} Refusing without a terminal: add --yes.\n")
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _replay(args: argparse.Namespace) -> int:
    from .replay_cli import run_replay

    return _run_tool(lambda redis: run_replay(redis, args, _confirm))


def _dl_list(args: argparse.Namespace) -> int:
    from .replay_cli import run_dl_list

    return _run_tool(lambda redis: run_dl_list(redis, args))


def _dl_replay(args: argparse.Namespace) -> int:
    from .replay_cli import run_dl_replay

    return _run_tool(lambda redis: run_dl_replay(redis, args))


def _dl_purge(args: argparse.Namespace) -> int:
    from .replay_cli import run_dl_purge

    return _run_tool(lambda redis: run_dl_purge(redis, args, _confirm))

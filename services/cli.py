"""`callbridge`: one console script, one subcommand per process or tool.

This module only parses and hands over (as arq's cli.py): each subcommand is registered by
its own package's `cli.register(subparsers)`, which imports heavy modules lazily so that
`callbridge --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# (module with `register(subparsers)`) in the order `--help` lists them.
_COMMAND_MODULES = (
    "services.webhook_ingress.cli",
    "services.call_orchestrator.cli",
    "services.media_gateway.cli",
    "simulators.cli",
    "services.demo.cli",
    "services.stack.cli",
    "services.ops.cli",
)

DESCRIPTION = """\
callbridge puts callers arriving through the Infobip Calls API in a live conversation with
an OpenAI Realtime voice agent.

  webhook ingress  -> Redis stream -> call orchestrator -> Calls API (dialog)
  Infobip media WebSocket <-> media gateway <-> OpenAI Realtime

Start with `callbridge demo` (everything on this machine, simulated Infobip and OpenAI).
Every subcommand has its own --help. Settings come from the environment or a .env file.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callbridge", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m callbridge.services.call_orchestrator orchestrator|replay|dead-letters ...`: the same
commands as `callbridge`, without importing the other services' CLIs (tests, subprocesses)."""

from __future__ import annotations

import argparse
import sys

from .cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m callbridge.services.call_orchestrator")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

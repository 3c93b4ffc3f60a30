"""`callbridge`: one console script, one subcommand per process or tool.

This module only parses and hands over (as arq's cli.py): each subcommand is registered by
its own package's `cli.register(subparsers)`, which imports heavy modules lazily so that
`callbridge --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

# (module with `register(subparsers)`) in the order `--help` lists them.
_COMMAND_MODULES = (
    "callbridge.services.webhook_ingress.cli",
    "callbridge.services.call_orchestrator.cli",
    "callbridge.services.media_gateway.cli",
    "callbridge.simulators.cli",
    "callbridge.services.demo.cli",
    "callbridge.services.stack.cli",
    "callbridge.services.ops.cli",
)

DESCRIPTION = """\
callbridge puts callers arriving through the Infobip Calls API in a live conversation with
an OpenAI Realtime voice agent.

  webhook ingress  -> Redis stream -> call orchestrator -> Calls API (dialog)
  Infobip media WebSocket <-> media gateway <-> OpenAI Realtime

Start with `callbridge demo` (everything on this machine, simulated Infobip and OpenAI).
Every subcommand has its own --help. Settings come from the environment or a .env file.
"""


# The production image installs only `callbridge.services` and `callbridge.shared`
# (Dockerfile): the simulators, and the PyPI packages only they need (pyproject's `sim`
# extra), live in a source checkout.
_SIMULATORS = "callbridge.simulators"
_SIM_EXTRA_MODULES = ("openai", "jsonschema")
_NO_SIMULATORS = (
    "callbridge {command}: the simulators are not installed in this image (the production "
    "image carries only the services); run them from a source checkout: "
    "`bash scripts/bootstrap.sh && .venv/bin/callbridge {command} ...` (README.md). Against "
    "the real platforms no simulator is needed: `callbridge ingress`, `callbridge "
    "orchestrator`, `callbridge gateway`.")
_NO_SIM_EXTRA = (
    "callbridge {command}: the simulators need the `sim` extra ({module} is missing): "
    "`pip install -e '.[sim]'` in a source checkout, or `bash scripts/bootstrap.sh`.")


def simulators_installed() -> bool:
    return importlib.util.find_spec(_SIMULATORS) is not None


def _is_simulators(missing: str | None) -> bool:
    """True when the module that could not be found is the simulators package (or in it)."""
    return (missing or "") == _SIMULATORS or (missing or "").startswith(_SIMULATORS + ".")


def require_simulators(command: str) -> None:
    """Exit with a clear message when `command` needs the simulators and they are absent."""
    if not simulators_installed():
        _no_simulators(command)


def _no_simulators(command: str) -> NoReturn:
    raise SystemExit(_NO_SIMULATORS.format(command=command))


def _register_sim_unavailable(sub: Any) -> None:
    """`sim` in an image without the simulators: listed, and says where to run it."""
    parser = sub.add_parser("sim", help="simulated Infobip / OpenAI Realtime (not installed "
                                        "here: source checkout only)", add_help=False)
    parser.add_argument("-h", "--help", action=_SimulatorsMissing, nargs=0)
    parser.add_argument("rest", nargs="*")
    parser.set_defaults(func=lambda args: _no_simulators("sim"), sim_unavailable=True)


class _SimulatorsMissing(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        _no_simulators("sim")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callbridge", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not (name.startswith(_SIMULATORS + ".") and _is_simulators(exc.name)):
                raise
            _register_sim_unavailable(sub)
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "sim_unavailable", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")  # as parse_args does
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        # A command reached for the simulators (`stack` simulating, `demo`) or their extra.
        if _is_simulators(exc.name):
            _no_simulators(args.command)
        root = (exc.name or "").partition(".")[0]
        if root in _SIM_EXTRA_MODULES:
            raise SystemExit(_NO_SIM_EXTRA.format(command=args.command, module=root)) from None
        raise
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

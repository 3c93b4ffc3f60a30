"""Run the fault scenarios one after another, each on a fresh stack, and print the table.

    python -m bench.faults              # the full run the README quotes (<= 25 minutes)
    python -m bench.faults --quick      # every scenario small: CI (<= 5 minutes)
    python -m bench.faults --json       # the rows as JSON instead of the table
    python -m bench.faults --only redis-kill-always --only leaks

Each scenario gets its own LocalStack (fresh Redis with AOF, fresh processes, simulators in
this process), drives traffic, injects its fault, waits (bounded) for recovery and checks its
invariants from Redis and the simulators' records. A scenario that overruns its time budget
or raises is a FAIL row; the next one still runs. Logs stay under --log-dir.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.faults.report import Row, table, to_json
from bench.faults.stack import FaultOptions, FaultStack

log = logging.getLogger(__name__)


@dataclass
class Ctx:
    """What a scenario gets: its size (quick or full) and where its stack logs."""

    quick: bool
    log_root: Path
    log_dirs: list[Path] = field(default_factory=list)
    row: Row | None = None  # the running scenario's row (phases of its stack go there)

    def size(self, quick: int, full: int) -> int:
        return quick if self.quick else full

    def sizef(self, quick: float, full: float) -> float:
        return quick if self.quick else full

    @contextlib.asynccontextmanager
    async def stack(self, name: str, opts: FaultOptions) -> AsyncIterator[FaultStack]:
        log_dir = self.log_root / name
        self.log_dirs.append(log_dir)
        stack = FaultStack(opts, log_dir)
        if self.row is not None:
            self.row.log_dir = str(log_dir)
        self.phase(f"start stack {name}")
        await stack.start()
        try:
            self.phase("drive")
            yield stack
        except asyncio.CancelledError:  # the budget ran out: remember where, before stopping
            if self.row is not None and self.row.phases:
                self.row.interrupted_in = self.row.phases[-1][0]
            raise
        finally:
            self.phase(f"stop stack {name}")
            await stack.stop()
            self.phase("stack stopped")

    def phase(self, name: str) -> None:
        if self.row is not None:
            self.row.phase(name)


ScenarioFn = Callable[[Ctx, Row], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    target: str  # "module:function" under bench.faults, imported when the scenario runs
    budget_quick_s: float
    budget_full_s: float

    def load(self) -> ScenarioFn:
        module, _, func = self.target.partition(":")
        fn: ScenarioFn = getattr(importlib.import_module(f"bench.faults.{module}"), func)
        return fn


SCENARIOS = (
    Scenario("1a redis-kill-always", "s_redis:kill_always", 40, 90),
    Scenario("1b redis-kill-everysec", "s_redis:kill_everysec", 40, 90),
    Scenario("2 dup-replay-orch-kill", "s_webhooks:duplicates", 60, 120),
    Scenario("3 calls-api-storm", "s_webhooks:storm", 50, 120),
    Scenario("4 model-drop-expire", "s_model:drop_and_expire", 60, 120),
    Scenario("4b model-primary-dies-failover", "s_model:primary_dies_failover", 45, 90),
    Scenario("5 gateway-sigterm", "s_gateway:sigterm", 50, 120),
    Scenario("6a gateway-sigkill", "s_gateway:sigkill", 50, 120),
    Scenario("6b gateway-sigstop", "s_gateway:sigstop", 50, 120),
    Scenario("7 abusive-peers", "s_abuse:abuse", 50, 120),
    Scenario("8 redis-maxmemory", "s_redis:maxmemory", 45, 100),
    Scenario("9 leaks", "s_leaks:leaks", 60, 420),
    Scenario("10 fuzz", "s_fuzz:fuzz", 60, 300),
    Scenario("11 secrets", "s_secrets:secrets_in_logs", 30, 60),
    Scenario("12a attack-edge-fail-open", "s_attacks_edge:fail_open_refused", 40, 60),
    Scenario("12b attack-edge-spoofing", "s_attacks_edge:forwarded_spoofing", 40, 60),
    Scenario("12c attack-edge-slow-big", "s_attacks_edge:dribblers_and_oversized", 40, 60),
    Scenario("12d attack-orch-api-base", "s_attacks_orch:api_base_and_paths", 40, 60),
    Scenario("13a attack-gw-preadmission", "s_attacks_gateway:preadmission", 45, 90),
    Scenario("13b attack-gw-flood", "s_attacks_gateway:flood", 45, 90),
    Scenario("13c attack-gw-dtmf", "s_attacks_gateway:dtmf", 45, 90),
)


def _matches(name: str, only: list[str]) -> bool:
    return not only or any(o in name for o in only)


async def run_all(quick: bool, only: list[str], log_root: Path,
                  progress: Callable[[str], None]) -> list[Row]:
    ctx = Ctx(quick=quick, log_root=log_root)
    rows: list[Row] = []
    for sc in SCENARIOS:
        if not _matches(sc.name, only):
            continue
        row = Row(sc.name, log_dir=str(log_root))  # narrowed by ctx.stack to the stack's
        ctx.row = row
        budget = sc.budget_quick_s if quick else sc.budget_full_s
        t0 = time.monotonic()
        progress(f"running {sc.name} (budget {budget:.0f} s) ...")
        try:
            async with asyncio.timeout(budget):
                await sc.load()(ctx, row)
        except TimeoutError:
            stuck = row.interrupted_in or (row.phases[-1][0] if row.phases else "?")
            row.check("within budget", False, f"did not finish within {budget:.0f} s, stuck "
                      f"in '{stuck}' (phases: {row.timeline()})")
        except Exception as exc:
            row.check("ran", False, f"{type(exc).__name__}: {exc}")
            log.debug("%s", traceback.format_exc())
            progress(traceback.format_exc())
        row.duration_s = round(time.monotonic() - t0, 1)
        rows.append(row.finish())
        progress(f"  {sc.name}: {'PASS' if row.passed else 'FAIL'} in {row.duration_s} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI, <= 5 min)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run scenarios whose name contains NAME (repeatable)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="where each scenario's stack logs (default: a temp dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("FAULTS_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log_root = args.log_dir or Path(tempfile.mkdtemp(prefix="callbridge-faults-"))
    log_root.mkdir(parents=True, exist_ok=True)

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    progress(f"logs: {log_root}")
    rows = asyncio.run(run_all(args.quick, args.only, log_root, progress))
    print(to_json(rows) if args.json else table(rows))
    return 0 if rows and all(r.passed for r in rows) else 1

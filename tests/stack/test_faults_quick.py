"""The fault suite, CI-sized: `python -m bench.faults --quick --json`, one test per scenario.

The suite runs once (a subprocess: it starts and kills its own stacks, Redis servers and
HAProxy; ~4-5 minutes on a 2-core box) and each scenario's row becomes its own test, so a
failure names the invariant that broke (the row's notes) and the others still report.
Collected by `scripts/test.sh` like every test; set CALLBRIDGE_SKIP_FAULTS=1 to skip locally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.faults.runner import SCENARIOS
from callbridge.services.stack.haproxy import haproxy_binary

ROOT = Path(__file__).resolve().parents[2]
SUITE_TIMEOUT_S = 600

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(SUITE_TIMEOUT_S + 60)]


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    if os.environ.get("CALLBRIDGE_SKIP_FAULTS"):
        pytest.skip("CALLBRIDGE_SKIP_FAULTS is set")
    if haproxy_binary() is None:
        pytest.skip("haproxy is not installed (scripts/bootstrap.sh installs it)")
    log_dir = tmp_path_factory.mktemp("faults")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--quick", "--json", "--log-dir", str(log_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S, check=False)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"the suite printed no JSON (exit {proc.returncode}):\n"
                    f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return {row["scenario"]: row for row in data["rows"]}


_ALARMS = ('"level":"WARNING"', '"level":"ERROR"', '"level":"CRITICAL"', "[WARNING]",
           "[ALERT]", "Traceback")


def warnings_of(log_dir: Path, limit: int = 40) -> str:
    """The warning and error lines of a scenario's logs: CI's temp dirs do not survive the
    run, so a failure carries what its services said."""
    lines = [f"{log.name}: {line}" for log in sorted(log_dir.glob("*.log"))
             for line in log.read_text(errors="replace").splitlines()
             if any(alarm in line for alarm in _ALARMS)]
    return "\n".join(lines[-limit:]) or "(no warnings in its logs)"


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_scenario_holds(rows: dict[str, dict[str, Any]], name: str) -> None:
    row = rows.get(name)
    assert row is not None, f"{name} did not run"
    assert row["passed"], (f"{name}: " + "; ".join(row["notes"])
                           + f"\nphases: {row['phases']}\nlogs {row['log_dir']}:\n"
                           + warnings_of(Path(row["log_dir"])))

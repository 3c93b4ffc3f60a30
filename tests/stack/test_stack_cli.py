"""`callbridge stack` stops every child process on SIGTERM, not only on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callbridge.shared.redis_server import pid_alive

pytestmark = pytest.mark.e2e


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True, check=False).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_stack_stops_its_services_on_a_stop_signal(redis_url: str, tmp_path: Path,
                                                   sig: signal.Signals) -> None:
    log = tmp_path / "stack.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "callbridge.services.cli", "stack", "--no-lb", "--replicas",
            "1"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "REDIS_URL": redis_url})
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C to stop" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "stack did not come up"
            time.sleep(0.1)  # polling a file another process writes, bounded above
        children = _children(proc.pid)
        assert len(children) == 3, children  # ingress, orchestrator, gateway
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0, log.read_text()[-2000:]
        assert not [c for c in children if pid_alive(c)], "orphaned service processes"
        assert "stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()

"""ManagedProcess.stop: a frozen (SIGSTOPped) child is stopped by SIGTERM, not by the
SIGKILL that follows the grace period (SIGTERM waits for SIGCONT on a stopped process)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from callbridge.services.stack.processes import ManagedProcess, ProcessSpec
from tests.waiting import wait_until

# Exits 0 on SIGTERM (a graceful stop), so the exit code tells which signal ended it.
GRACEFUL = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
            "print('ready', flush=True)\n"
            "while True: time.sleep(1)\n")


def test_a_frozen_child_stops_gracefully(tmp_path: Path) -> None:
    async def run() -> int | None:
        proc = ManagedProcess(ProcessSpec("frozen", [sys.executable, "-c", GRACEFUL]), tmp_path)
        proc.start()
        log = tmp_path / "frozen.log"
        await wait_until(lambda: b"ready" in log.read_bytes(), what="the child's handler")
        proc.send_signal(signal.SIGSTOP)
        return await proc.stop(timeout=10)

    assert asyncio.run(run()) == 0  # SIGKILL would give -9

"""Child processes of `callbridge stack` and `callbridge demo`: start, wait ready, stop.

Each process logs to its own file (the demo prints where); readiness is the service's own
`/readyz` (or `/healthz`) answering 200, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_url: str | None = None


def callbridge_argv(*args: str) -> list[str]:
    """Run a subcommand with this interpreter (works in a venv without the script on PATH)."""
    return [sys.executable, "-m", "callbridge.services.cli", *args]


class ManagedProcess:
    def __init__(self, spec: ProcessSpec, log_dir: Path) -> None:
        self.spec = spec
        self.log_path = log_dir / f"{spec.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        env = {**os.environ, **self.spec.env}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.spec.argv, env=env, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll the readiness URL until 200; fail early (with the log tail) if the child died."""
        if not self.spec.ready_url:
            return
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(f"{self.name} exited during start-up "
                                       f"(log {self.log_path}):\n{self.log_tail()}")
                try:
                    async with http.get(self.spec.ready_url) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)  # poll interval of a bounded readiness wait
        raise TimeoutError(f"{self.name} not ready at {self.spec.ready_url} after {timeout}s "
                           f"(log {self.log_path}):\n{self.log_tail()}")

    def send_signal(self, sig: int) -> None:
        if self.alive() and self.proc is not None:
            self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.proc is not None and time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)
        return None if self.proc is None else self.proc.poll()

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL if it overstays `timeout`."""
        if not self.alive():
            return self.proc.poll() if self.proc else None
        self.send_signal(signal.SIGTERM)
        self.send_signal(signal.SIGCONT)  # a stopped (frozen) child gets SIGTERM only once resumed
        code = await self.wait_exit(timeout)
        if code is None and self.proc is not None:
            self.proc.kill()
            code = await self.wait_exit(5)
        return code


class Supervisor:
    """Owns a set of processes; stops them in reverse start order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: list[ManagedProcess] = []

    def start(self, spec: ProcessSpec) -> ManagedProcess:
        proc = ManagedProcess(spec, self.log_dir)
        proc.start()
        self.processes.append(proc)
        return proc

    async def start_all(self, specs: list[ProcessSpec], timeout: float = 30.0) -> None:
        started = [self.start(spec) for spec in specs]
        await asyncio.gather(*(p.wait_ready(timeout) for p in started))

    def get(self, name: str) -> ManagedProcess:
        for proc in self.processes:
            if proc.name == name:
                return proc
        raise KeyError(name)

    async def stop_all(self, timeout: float = 15.0) -> None:
        await asyncio.gather(*(p.stop(timeout) for p in reversed(self.processes)))

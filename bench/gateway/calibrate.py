"""What one frame costs the kernel on this machine, measured before the levels.

The gateway writes about 100 WebSocket messages per call per second (50 frames to the
caller, 50 appends to the model), each one `send` on a TCP socket, and on loopback the
sender's core also runs the receiver's TCP input path. That cost belongs to the machine,
not to the gateway, and it moves a lot between machines and days (a virtual machine's
syscalls and cross-core wake-ups are dear): so each run prints it, and per-call CPU figures
of runs on different machines can be compared through it.

Layout as the levels: the sender pinned to the gateway's core, a uvloop receiver reading
on the load core; 150 sockets, 15,000 sends of 960 bytes per second (150 calls' worth of
frames to callers), paced in 5 ms batches like the gateway's pacer.

    python -m bench.gateway.calibrate          # prints the figures as JSON
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from callbridge.shared import event_loop

#: The benchmark's two cores: the process under test on one, the load on the other.
GATEWAY_CORE, LOAD_CORE = "0", "1"


def pin(core: str) -> list[str]:
    """The command prefix that pins a child process to `core` (nothing without taskset)."""
    return ["taskset", "-c", core] if shutil.which("taskset") else []

SOCKETS = 150
SENDS_PER_S = 15_000
FRAME = 960
SECONDS = 3.0


@dataclass
class SendCost:
    sends_per_s: float
    us_per_send: float
    kernel_us_per_send: float

    def describe(self) -> str:
        return (f"one {FRAME}-byte loopback send from the gateway's core costs "
                f"{self.us_per_send:.1f} us ({self.kernel_us_per_send:.1f} us in the kernel): "
                f"at 100 messages per call per second, "
                f"{self.us_per_send * 100 / 1e4:.2f} % of a core per call before any of "
                f"the gateway's own work")


def _receive() -> None:
    """Accept and read until stdin closes; prints the port first."""
    async def main() -> None:
        loop = asyncio.get_running_loop()

        class Sink(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                pass

        server = await loop.create_server(Sink, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it
        server.close()

    event_loop.run(main())


def _send(port: int) -> SendCost:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(SOCKETS)]
    for sock in socks:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = os.urandom(FRAME)
    per_tick = SENDS_PER_S // 200
    start, before = time.monotonic(), os.times()
    due, sent = start, 0
    for _ in range(int(SECONDS * 200)):  # 5 ms ticks
        for _ in range(per_tick):
            socks[sent % SOCKETS].send(data)
            sent += 1
        due += 0.005
        time.sleep(max(0.0, due - time.monotonic()))  # pacing the load, not synchronising
    after, elapsed = os.times(), time.monotonic() - start
    for sock in socks:
        sock.close()
    user, kernel = after.user - before.user, after.system - before.system
    return SendCost(round(sent / elapsed), round((user + kernel) / sent * 1e6, 1),
                    round(kernel / sent * 1e6, 1))


def measure(pin_sender: list[str], pin_receiver: list[str]) -> SendCost:
    """Run a receiver and a sender as two processes pinned like the levels."""
    py = sys.executable
    receiver = subprocess.Popen([*pin_receiver, py, "-m", "bench.gateway.calibrate",
                                 "--receive"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert receiver.stdout is not None and receiver.stdin is not None
        port = receiver.stdout.readline().decode().strip()
        out = subprocess.run([*pin_sender, py, "-m", "bench.gateway.calibrate", "--send", port],
                             capture_output=True, check=True, timeout=60).stdout
        return SendCost(**json.loads(out))
    finally:
        if receiver.stdin is not None:
            receiver.stdin.close()
        try:
            receiver.wait(10)
        except subprocess.TimeoutExpired:
            receiver.kill()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--receive"]:
        _receive()
    elif args[:1] == ["--send"] and len(args) == 2:
        print(json.dumps(_send(int(args[1])).__dict__))
    elif not args:
        cost = measure(pin(GATEWAY_CORE), pin(LOAD_CORE))
        print(json.dumps(cost.__dict__))
        print(cost.describe(), file=sys.stderr)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

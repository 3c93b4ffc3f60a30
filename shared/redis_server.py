"""A private `redis-server` process: for the demo, `callbridge stack` and the tests.

Tests need a Redis they own so fault tests can stop, kill and restart it; the demo needs one
when REDIS_URL is not set. The data dir survives `restart()`, so with AOF on an acknowledged
write survives a SIGKILL (the fault suite's Redis scenario).

A password (`requirepass`) goes into a config file readable only by us, never onto the
command line (`ps` shows every process' arguments to every user); `maxmemory` comes with
`noeviction`, so a full Redis refuses writes (the ingress answers 503) instead of silently
evicting acknowledged events or call state.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

INSTALL_HINT = (
    "redis-server was not found on PATH. Install it (Debian/Ubuntu: `apt-get install "
    "redis-server`; macOS: `brew install redis`) or set REDIS_URL to a running Redis."
)


#: Where the kernel picks source ports of outgoing connections (and ports for bind(0)).
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_BELOW_EPHEMERAL = 12_000  # how many ports under that range free_port chooses from
_pick = random.SystemRandom()  # not the global generator, which tests may seed


def _ports_below_ephemeral() -> range:
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return range(max(1024, low - _BELOW_EPHEMERAL), max(2048, low))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to now, for a server started a moment later.

    Chosen below the kernel's ephemeral range: a port from bind(0) comes from that range,
    which the kernel also hands out as the source port of every outgoing connection, so one
    of the hundreds a stack opens could take it before the server meant for it binds (seen
    in CI: haproxy "cannot bind socket (Address already in use)"). Below the range, only
    another free_port caller could, and it picks at random among thousands.
    """
    ports = _ports_below_ephemeral()
    for _ in range(100):  # bounded: almost always the first try
        port = _pick.choice(ports)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: fall back to the kernel's choice
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedisServerNotFound(RuntimeError):
    pass


class RedisServer:
    """Start, stop, kill and restart one private redis-server on a fixed port."""

    def __init__(self, port: int | None = None, appendonly: bool = False,
                 appendfsync: str = "everysec", data_dir: str | None = None,
                 extra_args: list[str] | None = None, password: str | None = None,
                 maxmemory: str | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise RedisServerNotFound(INSTALL_HINT)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self._own_dir = data_dir is None
        # Absolute: redis-server chdirs into --dir before opening --logfile, so a relative
        # path would be resolved twice and the server would exit at start-up.
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="callbridge-redis-")).resolve()
        self.extra_args = extra_args or []
        self.password = password
        self.maxmemory = maxmemory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients use; it carries the password when there is one (redact it
        before printing: callbridge.shared.logging_setup.redact)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _config_file(self) -> list[str]:
        """A private config file holding the password (first argument, as redis-server
        requires), so it never appears in the process list."""
        if not self.password:
            return []
        if any(c in self.password for c in "\r\n\" "):
            raise ValueError("the Redis password may not contain spaces, quotes or newlines")
        path = self.data_dir / "callbridge-auth.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"requirepass {self.password}\n")
        return [str(path)]

    def start(self, timeout: float = 10.0) -> None:
        memory = (["--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction"]
                  if self.maxmemory else [])
        args = [
            str(self.binary), *self._config_file(),
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync, "--protected-mode", "no",
            "--logfile", str(self.data_dir / "redis.log"), *memory, *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.data_dir / "redis.log")
                tail = log.read_text()[-500:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited at start-up: {tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    if self.password:
                        secret = self.password.encode()
                        sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret),
                                                                            secret))
                        if not sock.recv(64).startswith(b"+OK"):
                            raise OSError("not ready for AUTH yet")
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"redis-server on port {self.port} did not answer in {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True

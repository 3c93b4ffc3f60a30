"""The private redis-server the demo, the stack and the tests start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from callbridge.shared.redis_server import RedisServer


def test_starts_with_a_relative_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `callbridge demo`'s default output folder is relative (./demo-out).
    monkeypatch.chdir(tmp_path)
    os.makedirs("out/redis")
    with RedisServer(appendonly=True, data_dir="out/redis") as server:
        assert redis.Redis.from_url(server.url).ping()
    assert (tmp_path / "out" / "redis" / "redis.log").exists()


def test_acknowledged_writes_survive_sigkill_with_aof_always(tmp_path: Path) -> None:
    server = RedisServer(appendonly=True, appendfsync="always", data_dir=str(tmp_path))
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.xadd("s", {"k": "v"})
        server.kill()
        server.start()
        assert client.xlen("s") == 1
    finally:
        server.close()


def test_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    """Ports from bind(0) can be taken by any outgoing connection's source port before the
    server binds them (a CI failure: haproxy 'Address already in use')."""
    import socket

    from callbridge.shared.redis_server import _ports_below_ephemeral, free_port

    ports = _ports_below_ephemeral()
    for _ in range(20):
        port = free_port()
        assert port in ports
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # still free


def test_password_and_memory_bound(tmp_path: Path) -> None:
    password = "Redis-Pa55-with/slash"
    with RedisServer(appendonly=True, data_dir=str(tmp_path), password=password,
                     maxmemory="64mb") as server:
        assert server.url.startswith("redis://:Redis-Pa55-with%2Fslash@127.0.0.1:")
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        config = client.config_get("maxmemory*")
        assert config["maxmemory"] == str(64 * 1024 * 1024)
        assert config["maxmemory-policy"] == "noeviction"
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
        # Never on the command line, which every user can read in `ps`.
        assert server.proc is not None
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
        conf = tmp_path / "callbridge-auth.conf"
        assert conf.stat().st_mode & 0o077 == 0
        server.restart()  # the fault suite restarts it: the password holds
        assert redis.Redis.from_url(server.url).ping()

"""Redis for tests: REDIS_URL when set, else testcontainers' Redis when a Docker engine
answers, else a private redis-server on a free port (our machines have no Docker engine).

`redis_server` (session) is the server; `redis_url` gives each test a flushed database;
`restartable_redis` is a private server a fault test may stop, kill and restart.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import redis
import redis.asyncio as aioredis

from shared.redis_server import RedisServer


@dataclass
class RedisHandle:
    url: str
    path: str  # "env", "testcontainers" or "redis-server": printed so CI shows which


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisHandle]:
    if os.environ.get("REDIS_URL"):
        handle = RedisHandle(os.environ["REDIS_URL"], "env")
        sys.stderr.write(f"\n[tests] Redis from REDIS_URL ({handle.path})\n")
        yield handle
        return
    if os.environ.get("CALLBRIDGE_TEST_DOCKER", "auto") != "never" and _docker_answers():
        # Ryuk's image cannot be pulled without a registry: the fixture removes the container.
        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        from testcontainers.redis import RedisContainer

        container = RedisContainer("redis:7")
        container.start()
        try:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            sys.stderr.write(f"\n[tests] Redis from testcontainers at {host}:{port}\n")
            yield RedisHandle(f"redis://{host}:{port}/0", "testcontainers")
        finally:
            container.stop()
        return
    server = RedisServer()
    server.start()
    sys.stderr.write(f"\n[tests] Redis from a private redis-server on port {server.port}\n")
    try:
        yield RedisHandle(server.url, "redis-server")
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisHandle) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    yield redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def restartable_redis() -> Iterator[RedisServer]:
    """A private redis-server (AOF on, fsync always) that a fault test may stop and restart."""
    server = RedisServer(appendonly=True, appendfsync="always")
    server.start()
    try:
        yield server
    finally:
        server.close()

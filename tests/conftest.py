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


TEST_REDIS_IMAGE = os.environ.get("CALLBRIDGE_TEST_REDIS_IMAGE", "redis:7")


def _docker_answers() -> bool:
    """True when a Docker engine answers AND already holds the Redis image.

    No registry is reachable from our machines, so a missing image would make testcontainers
    try (and fail) to pull it: fall back to redis-server instead, saying why. The image is
    the official one where a registry exists, else deploy/offline-images.sh's stand-in.
    """
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:
        return False
    try:
        client.images.get(TEST_REDIS_IMAGE)
        return True
    except Exception:
        sys.stderr.write(f"\n[tests] Docker answers but has no {TEST_REDIS_IMAGE} image "
                         "(deploy/offline-images.sh builds it): not using testcontainers\n")
        return False
    finally:
        client.close()


def _local_docker_engine() -> bool:
    """The engine runs on this machine (unix socket), so published ports are on 127.0.0.1."""
    host = os.environ.get("DOCKER_HOST", "")
    return host == "" or host.startswith("unix://")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisHandle]:
    if os.environ.get("REDIS_URL"):
        handle = RedisHandle(os.environ["REDIS_URL"], "env")
        sys.stderr.write(f"\n[tests] Redis from REDIS_URL ({handle.path})\n")
        yield handle
        return
    if os.environ.get("CALLBRIDGE_TEST_DOCKER", "auto") != "never" and _docker_answers():
        # Ryuk's image cannot be pulled without a registry: the fixture removes the container
        # itself (stop() = remove(force, volumes)). With a local engine the port is published
        # on 127.0.0.1 only and reached there (testcontainers would otherwise pick the bridge
        # gateway when the tests themselves run inside a container). Set before the import:
        # testcontainers reads its configuration once, at import time.
        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        local = _local_docker_engine()
        if local:
            os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
            os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
        from testcontainers.redis import RedisContainer

        container = RedisContainer(TEST_REDIS_IMAGE)
        if local:
            container.with_bind_ports(6379, ("127.0.0.1", None))  # type: ignore[arg-type]
        container.start()  # its log says "Pulling image": docker-py pulls only when absent
        try:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            short_id = container.get_wrapped_container().short_id
            sys.stderr.write(f"\n[tests] Redis from testcontainers ({TEST_REDIS_IMAGE}, "
                             f"container {short_id}) at {host}:{port}\n")
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

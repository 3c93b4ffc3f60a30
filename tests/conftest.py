"""Redis for tests: REDIS_URL when set, else testcontainers' Redis when a Docker engine
answers and holds the Redis image (CI starts one: `.ci/containers.sh engine`), else a
private redis-server on a free port (what a machine without Docker gets).

`redis_server` (session) is the server; `redis_url` gives each test a flushed database;
`restartable_redis` is a private server a fault test may stop, kill and restart. The servers
started here have AOF on, as the ingress requires (INGRESS_REQUIRE_AOF); a REDIS_URL given
from outside must have it too.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import redis
import redis.asyncio as aioredis

from callbridge.shared.redis_server import RedisServer


@dataclass
class RedisHandle:
    url: str
    path: str  # "env", "testcontainers" or "redis-server": printed so CI shows which


TEST_REDIS_IMAGE = os.environ.get("CALLBRIDGE_TEST_REDIS_IMAGE", "redis:7")


def _docker_answers(config: pytest.Config) -> bool:
    """True when a Docker engine answers AND already holds the Redis image.

    No registry is reachable from our machines, so a missing image would make testcontainers
    try (and fail) to pull it: fall back to redis-server instead, saying why. The image is
    the official one where a registry exists, else deploy/offline-images.sh's stand-in.
    """
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:
        return False
    try:
        client.images.get(TEST_REDIS_IMAGE)
        return True
    except Exception:
        _announce(config, f"[tests] Docker answers but has no {TEST_REDIS_IMAGE} image "
                          "(deploy/offline-images.sh builds it): not using testcontainers")
        return False
    finally:
        client.close()


def _local_docker_engine() -> bool:
    """The engine runs on this machine (unix socket), so published ports are on 127.0.0.1."""
    host = os.environ.get("DOCKER_HOST", "")
    return host == "" or host.startswith("unix://")


def _announce(config: pytest.Config, message: str) -> None:
    """Show which Redis the suite uses even under -q: output captured from a fixture is
    only shown for failing tests, so suspend capturing and write through the reporter."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        sys.stderr.write(f"\n{message}\n")
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(message)


@pytest.fixture(scope="session")
def redis_server(pytestconfig: pytest.Config) -> Iterator[RedisHandle]:
    if os.environ.get("REDIS_URL"):
        handle = RedisHandle(os.environ["REDIS_URL"], "env")
        _announce(pytestconfig, f"[tests] Redis from REDIS_URL ({handle.path})")
        yield handle
        return
    use_docker = os.environ.get("CALLBRIDGE_TEST_DOCKER", "auto") != "never"
    if use_docker and _docker_answers(pytestconfig):
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
        with warnings.catch_warnings():  # its own deprecated decorator, at import
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.redis import RedisContainer

        container = RedisContainer(TEST_REDIS_IMAGE).with_command(
            "redis-server --appendonly yes --save ''")
        if local:
            container.with_bind_ports(6379, ("127.0.0.1", None))
        container.start()  # its log says "Pulling image": docker-py pulls only when absent
        try:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            short_id = container.get_wrapped_container().short_id
            _announce(pytestconfig, f"[tests] Redis from testcontainers ({TEST_REDIS_IMAGE}, "
                                    f"container {short_id}) at {host}:{port}")
            yield RedisHandle(f"redis://{host}:{port}/0", "testcontainers")
        finally:
            container.stop()
        return
    server = RedisServer(appendonly=True)
    server.start()
    _announce(pytestconfig, f"[tests] Redis from a private redis-server on port {server.port}")
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

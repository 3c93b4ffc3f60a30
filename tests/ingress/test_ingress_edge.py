"""The ingress fails closed: no authentication, an empty secret or a Redis without AOF stop it
from starting (unless the operator says so explicitly, which is warned on every start);
events are bounded per type; a client dribbling its headers is cut off."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from bench.faults.slow_client import dribble_request_head
from callbridge.services.webhook_ingress.app import PersistenceError
from callbridge.services.webhook_ingress.server import serve
from callbridge.shared import redis_keys
from callbridge.shared.redis_server import RedisServer, free_port
from tests.ingress.fixtures import AUTH_JSON, event, ingress_client, make_settings

ROOT = Path(__file__).resolve().parents[2]


# Authentication is not optional -----------------------------------------------------------

def test_no_authentication_is_a_configuration_error(redis_url: str) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_ALLOW_UNAUTHENTICATED=true") as info:
        make_settings(redis_url, webhook_basic_user=None, webhook_basic_password=None)
    assert "WEBHOOK_HMAC_SECRET" in str(info.value)
    # The allowlist alone authenticates nobody.
    with pytest.raises(ValueError, match="no webhook authentication"):
        make_settings(redis_url, webhook_allowlist="10.0.0.0/8", webhook_basic_user=None)


@pytest.mark.parametrize(("field", "variable"), [
    ("webhook_hmac_secret", "WEBHOOK_HMAC_SECRET"),
    ("webhook_basic_password", "WEBHOOK_BASIC_PASSWORD"),
])
@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_secret_is_an_error_not_off(redis_url: str, field: str, variable: str,
                                              empty: str) -> None:
    overrides = {field: empty}
    if field == "webhook_basic_password":
        overrides["webhook_basic_user"] = "infobip"
    with pytest.raises(ValueError, match=f"{variable} is set but empty"):
        make_settings(redis_url, **overrides)


async def test_unauthenticated_on_purpose_starts_and_warns_every_start(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(redis_url, webhook_allow_unauthenticated=True)
    caplog.set_level(logging.WARNING, logger="callbridge.services.webhook_ingress")
    for _ in range(2):
        async with ingress_client(settings) as client:
            resp = await client.post("/webhook", data=event("c-open"),
                                     headers={"Content-Type": "application/json"})
            assert resp.status == 200
    warnings = [r for r in caplog.records if "NOT authenticated" in r.getMessage()]
    assert len(warnings) == 2


def _ingress_command(env_extra: dict[str, str], tmp_path: Path,
                     timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`callbridge ingress` as an operator runs it, from a directory without a .env."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WEBHOOK_", "INGRESS_", "REDIS_URL"))}
    env.update({"LOG_FORMAT": "text", "INGRESS_PORT": str(free_port()),
                "INGRESS_DRAIN_DELAY_S": "0", **env_extra})
    return subprocess.run([sys.executable, "-m", "callbridge.services.cli", "ingress"],
                          cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=timeout)


def test_the_command_refuses_to_start_without_auth(redis_url: str, tmp_path: Path) -> None:
    result = _ingress_command({"REDIS_URL": redis_url}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "WEBHOOK_ALLOW_UNAUTHENTICATED=true" in result.stderr
    result = _ingress_command({"REDIS_URL": redis_url, "WEBHOOK_HMAC_SECRET": ""}, tmp_path)
    assert result.returncode == 2
    assert "WEBHOOK_HMAC_SECRET is set but empty" in result.stderr


# Persistence --------------------------------------------------------------------------------

@pytest.fixture
def redis_without_aof() -> object:
    server = RedisServer(appendonly=False)
    server.start()
    try:
        yield server
    finally:
        server.close()


async def test_refuses_to_start_on_a_redis_without_aof(redis_without_aof: RedisServer) -> None:
    settings = make_settings(redis_without_aof.url)
    with pytest.raises(PersistenceError, match="appendonly yes"):
        async with ingress_client(settings):
            pass


async def test_redis_without_aof_on_purpose_warns(redis_without_aof: RedisServer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(redis_without_aof.url, ingress_require_aof=False)
    caplog.set_level(logging.WARNING, logger="callbridge.services.webhook_ingress")
    async with ingress_client(settings) as client:
        assert (await client.post("/webhook", data=event("c-1"),
                                  headers={"Content-Type": "application/json"})).status == 200
    assert any("INGRESS_REQUIRE_AOF=false" in r.getMessage() for r in caplog.records)


async def test_config_command_renamed_is_unknown_and_refused() -> None:
    server = RedisServer(appendonly=True, extra_args=["--rename-command", "CONFIG", ""])
    server.start()
    try:
        with pytest.raises(PersistenceError, match="disabled or renamed"):
            async with ingress_client(make_settings(server.url)):
                pass
    finally:
        server.close()


def test_the_command_refuses_a_redis_without_aof(redis_without_aof: RedisServer,
                                                 tmp_path: Path) -> None:
    result = _ingress_command({"REDIS_URL": redis_without_aof.url,
                               "WEBHOOK_HMAC_SECRET": "k" * 32}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "AOF off" in result.stderr and "INGRESS_REQUIRE_AOF=false" in result.stderr


# Event size per type ---------------------------------------------------------------------

def _event_of_size(type_: str, size: int) -> bytes:
    base = orjson.loads(event("c-big", type_=type_))
    base["customData"] = {"pad": ""}
    padding = size - len(orjson.dumps(base))
    base["customData"]["pad"] = "x" * padding
    body = orjson.dumps(base)
    assert len(body) == size
    return body


@pytest.mark.parametrize(("type_", "size", "status"), [
    ("CALL_RECEIVED", 16384, 200),
    ("CALL_RECEIVED", 16385, 413),
    ("SOMETHING_NEW", 4096, 200),
    ("SOMETHING_NEW", 4097, 413),
    ("TRANSCRIPTION", 8000, 200),  # raised by INGRESS_EVENT_TYPE_MAX_BYTES below
])
async def test_event_size_is_bounded_per_type(redis_url: str, redis_client: aioredis.Redis,
                                              type_: str, size: int, status: int) -> None:
    settings = make_settings(redis_url, ingress_event_type_max_bytes="TRANSCRIPTION=8192")
    async with ingress_client(settings) as client:
        resp = await client.post("/webhook", data=_event_of_size(type_, size),
                                 headers={"Content-Type": "application/json"})
        assert resp.status == status
        if status == 413:
            answer = await resp.json()
            assert answer["error"] == "event_too_large" and str(size) in answer["detail"]
    assert await redis_client.xlen(redis_keys.EVENTS_STREAM) == (1 if status == 200 else 0)


def test_type_limits_setting_is_validated(redis_url: str) -> None:
    with pytest.raises(ValueError, match="TYPE=BYTES"):
        make_settings(redis_url, ingress_event_type_max_bytes="TRANSCRIPTION:8192")


# Slow clients ----------------------------------------------------------------------------

async def test_a_header_dribbler_is_cut_off(redis_url: str) -> None:
    port = free_port()
    settings = make_settings(redis_url, ingress_port=port, ingress_keepalive_timeout_s=1.0)
    stop = asyncio.Event()
    listening = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop=stop, on_ready=lambda _: listening.set()))
    try:
        await asyncio.wait_for(listening.wait(), 10)
        took, answer = await dribble_request_head(port, 10)
        assert took < 10, "the server kept a header dribbler open for 10 s"
        assert took < 5, took
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:80]
        # Honest clients are still served.
        async with ingress_client(settings) as client:
            assert (await client.post("/webhook", data=event("c-ok"),
                                      headers=AUTH_JSON)).status == 200
    finally:
        stop.set()
        await asyncio.wait_for(server, 20)

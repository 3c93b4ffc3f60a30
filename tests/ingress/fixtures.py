"""Helpers for the webhook ingress tests (plain functions, imported by tests/ingress/)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestClient, TestServer

from callbridge.services.webhook_ingress.app import create_app
from callbridge.services.webhook_ingress.config import IngressSettings
from callbridge.services.webhook_ingress.state import STATE, IngressState

JSON = {"Content-Type": "application/json"}
#: The tests run with webhook auth on, like production: HTTP Basic with these credentials
#: unless a test configures its own (or, explicitly, none).
TEST_BASIC_USER, TEST_BASIC_PASSWORD = "test-infobip", "test-Basic-pa55-6d1f0c"
AUTH = {"Authorization": aiohttp.encode_basic_auth(TEST_BASIC_USER, TEST_BASIC_PASSWORD)}
AUTH_JSON = {**JSON, **AUTH}
_AUTH_FIELDS = ("webhook_basic_user", "webhook_basic_password", "webhook_hmac_secret",
                "webhook_allow_unauthenticated")


def make_settings(redis_url: str, **overrides: Any) -> IngressSettings:
    """Settings isolated from the machine's environment and .env file, with the test Basic
    credentials unless `overrides` choose the authentication."""
    values: dict[str, Any] = {"redis_url": redis_url, "ingress_drain_delay_s": 0.0,
                              "ingress_host": "127.0.0.1", "ingress_port": 0}
    if not any(name in overrides for name in _AUTH_FIELDS):
        values.update(webhook_basic_user=TEST_BASIC_USER,
                      webhook_basic_password=TEST_BASIC_PASSWORD)
    values.update(overrides)
    return IngressSettings(_env_file=None, **values)


@asynccontextmanager
async def ingress_client(settings: IngressSettings) -> AsyncIterator[TestClient[Any, Any]]:
    """The same create_app the CLI runs, behind aiohttp's TestServer on 127.0.0.1. With the
    test credentials configured, every request carries them (a test sending its own
    Authorization header configures its own credentials)."""
    default_headers = AUTH if settings.webhook_basic_user == TEST_BASIC_USER else {}
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1"),
                          headers=default_headers) as client:
        yield client


def state_of(client: TestClient[Any, Any]) -> IngressState:
    app = client.app
    assert app is not None
    return app[STATE]


def event(call_id: str | None = "call-1", type_: str = "CALL_RECEIVED",
          **extra: Any) -> bytes:
    body: dict[str, Any] = {"type": type_, "timestamp": "2026-01-15T12:00:00.000+0000",
                            "callsConfigurationId": "cfg-1",
                            "platform": {"applicationId": "app-1"}, "properties": {}}
    if call_id is not None:
        body["callId"] = call_id
        body["properties"] = {"call": {"id": call_id, "from": "41793026727",
                                       "to": "41793026731", "direction": "INBOUND"},
                              "apiBaseUrl": "http://127.0.0.1:8070"}
    body.update(extra)
    return orjson.dumps(body)

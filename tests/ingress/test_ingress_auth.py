"""Who may post: HTTP Basic, HMAC signature, source allowlist with trusted proxies. A refused
request stores nothing (neither stream) and no secret reaches a response or a log line."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from ipaddress import ip_address, ip_network
from typing import Any

import pytest
import redis.asyncio as aioredis
from multidict import CIMultiDict, CIMultiDictProxy

from callbridge.services.webhook_ingress.auth import client_address, parse_ip
from callbridge.shared import redis_keys
from callbridge.shared.webhook_signing import HmacScheme, sign_headers
from tests.ingress.fixtures import JSON, event, ingress_client, make_settings

USER, PASSWORD = "infobip", "pa55-w0rd-Secret-7731"
HMAC_SECRET = "hmac-Secret-Value-99812"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {**JSON, "Authorization": f"Basic {token}"}


async def stored_nothing(client: aioredis.Redis) -> bool:
    return (await client.xlen(redis_keys.EVENTS_STREAM) == 0
            and await client.xlen(redis_keys.REJECTED_STREAM) == 0)


# HTTP Basic ------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    JSON,
    basic(USER, "wrong"),
    basic("someone", PASSWORD),
    basic(USER, ""),
    {**JSON, "Authorization": "Basic !!!not-base64"},
    {**JSON, "Authorization": f"Bearer {PASSWORD}"},
    {**JSON, "Authorization": "Basic " + base64.b64encode(USER.encode()).decode()},
])
async def test_basic_refusals_are_401_with_challenge_and_store_nothing(
        redis_url: str, redis_client: aioredis.Redis, headers: dict[str, str],
        caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(redis_url, webhook_basic_user=USER, webhook_basic_password=PASSWORD)
    caplog.set_level(logging.DEBUG)
    async with ingress_client(settings) as client:
        # An invalid body too: a stranger's rubbish must not reach the rejected stream.
        for body in (event("c-1"), b"{not json"):
            resp = await client.post("/webhook", data=body, headers=headers)
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
            answer = await resp.json()
            assert answer["error"] == "unauthorized" and answer["detail"]
            assert PASSWORD not in await resp.text()
    assert await stored_nothing(redis_client)
    assert PASSWORD not in caplog.text


async def test_basic_right_credentials_pass(redis_url: str,
                                            redis_client: aioredis.Redis) -> None:
    settings = make_settings(redis_url, webhook_basic_user=USER, webhook_basic_password=PASSWORD)
    async with ingress_client(settings) as client:
        resp = await client.post("/webhook", data=event("c-1"), headers=basic(USER, PASSWORD))
        assert resp.status == 200
    assert await redis_client.xlen(redis_keys.EVENTS_STREAM) == 1


def test_secrets_never_in_settings_repr(redis_url: str) -> None:
    settings = make_settings(redis_url, webhook_basic_user=USER, webhook_basic_password=PASSWORD,
                             webhook_hmac_secret=HMAC_SECRET)
    shown = repr(settings) + str(settings.model_dump())
    assert PASSWORD not in shown and HMAC_SECRET not in shown


def test_basic_user_without_password_is_a_configuration_error(redis_url: str) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_BASIC_PASSWORD"):
        make_settings(redis_url, webhook_basic_user=USER)


# HMAC ------------------------------------------------------------------------------------

def signed(body: bytes, secret: str = HMAC_SECRET, now: float | None = None) -> dict[str, str]:
    return {**JSON, **sign_headers(secret.encode(), body, now=now)}


@pytest.mark.parametrize("case", ["missing", "wrong_secret", "stale", "future", "tampered",
                                  "bad_timestamp"])
async def test_hmac_refusals_are_401_and_store_nothing(
        redis_url: str, redis_client: aioredis.Redis, case: str,
        caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(redis_url, webhook_hmac_secret=HMAC_SECRET,
                             webhook_hmac_tolerance_s=300)
    caplog.set_level(logging.DEBUG)
    body = event("c-1")
    headers = {
        "missing": JSON,
        "wrong_secret": signed(body, secret="not-the-secret"),
        "stale": signed(body, now=time.time() - 3600),
        "future": signed(body, now=time.time() + 3600),
        "tampered": signed(event("c-2")),
        "bad_timestamp": {**signed(body), "X-Callbridge-Timestamp": "yesterday"},
    }[case]
    async with ingress_client(settings) as client:
        resp = await client.post("/webhook", data=body, headers=headers)
        assert resp.status == 401
        answer = await resp.json()
        assert answer["error"] == "bad_signature"
        assert HMAC_SECRET not in answer["detail"]
    assert await stored_nothing(redis_client)
    assert HMAC_SECRET not in caplog.text


async def test_hmac_right_signature_passes_and_invalid_signed_body_is_kept(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    settings = make_settings(redis_url, webhook_hmac_secret=HMAC_SECRET,
                             webhook_hmac_signature_header="X-Infobip-Signature")
    renamed = HmacScheme(signature_header="X-Infobip-Signature")
    body = event("c-1")
    async with ingress_client(settings) as client:
        headers = {**JSON, **sign_headers(HMAC_SECRET.encode(), body, scheme=renamed)}
        assert (await client.post("/webhook", data=body, headers=headers)).status == 200
        # Authenticated but not JSON: 400, and kept for forensics (the sender is known).
        junk = b"{oops"
        headers = {**JSON, **sign_headers(HMAC_SECRET.encode(), junk, scheme=renamed)}
        assert (await client.post("/webhook", data=junk, headers=headers)).status == 400
        # Too large to verify: 413, answered but not stored (could be anyone).
        big = b"x" * 70_000
        assert (await client.post("/webhook", data=big, headers=signed(big))).status == 413
    assert [f[b"body"] for _i, f in await redis_client.xrange(redis_keys.EVENTS_STREAM)] == [body]
    rejected = await _rejected_eventually(redis_client)
    assert [f[b"body"] for f in rejected] == [junk]


async def test_basic_and_hmac_together_both_required(redis_url: str) -> None:
    settings = make_settings(redis_url, webhook_basic_user=USER,
                             webhook_basic_password=PASSWORD, webhook_hmac_secret=HMAC_SECRET)
    body = event("c-1")
    async with ingress_client(settings) as client:
        only_basic = await client.post("/webhook", data=body, headers=basic(USER, PASSWORD))
        only_hmac = await client.post("/webhook", data=body, headers=signed(body))
        both = await client.post("/webhook", data=body,
                                 headers={**signed(body), **basic(USER, PASSWORD)})
    assert (only_basic.status, only_hmac.status, both.status) == (401, 401, 200)


# Source allowlist ------------------------------------------------------------------------

@pytest.mark.parametrize(("allow", "proxies", "headers", "status"), [
    ("127.0.0.1/32", "", {}, 200),
    ("10.0.0.0/8", "", {}, 403),
    # Forwarded headers from an untrusted peer are ignored (the peer is 127.0.0.1).
    ("203.0.113.0/24", "", {"X-Forwarded-For": "203.0.113.5"}, 403),
    ("127.0.0.1/32", "", {"X-Forwarded-For": "198.51.100.1"}, 200),
    # From a trusted proxy: the first untrusted hop from the right is the client.
    ("203.0.113.0/24", "127.0.0.1/32", {"X-Forwarded-For": "203.0.113.5"}, 200),
    ("203.0.113.0/24", "127.0.0.1/32", {"X-Forwarded-For": "203.0.113.5, 198.51.100.1"}, 403),
    ("203.0.113.0/24", "127.0.0.1/32, 10.0.0.0/8",
     {"X-Forwarded-For": "203.0.113.5, 10.1.2.3"}, 200),
    # Only the one configured header (X-Forwarded-For) counts: a client's own `Forwarded`
    # never wins over what the proxy set, alone or beside it.
    ("203.0.113.0/24", "127.0.0.1/32", {"Forwarded": 'for="203.0.113.5:4711";proto=https'}, 403),
    ("203.0.113.0/24", "127.0.0.1/32",
     {"Forwarded": "for=203.0.113.5", "X-Forwarded-For": "198.51.100.1"}, 403),
    ("198.51.100.0/24", "127.0.0.1/32",
     {"Forwarded": "for=203.0.113.5", "X-Forwarded-For": "198.51.100.1"}, 200),
    ("203.0.113.0/24", "127.0.0.1/32", {"X-Forwarded-For": "unknown"}, 403),
    ("127.0.0.1/32", "127.0.0.1/32", {}, 200),  # proxy sent no header: the proxy itself
])
async def test_allowlist(redis_url: str, redis_client: aioredis.Redis, allow: str,
                         proxies: str, headers: dict[str, str], status: int) -> None:
    settings = make_settings(redis_url, webhook_allowlist=allow,
                             webhook_trusted_proxies=proxies)
    async with ingress_client(settings) as client:
        resp = await client.post("/webhook", data=event("c-1"), headers={**JSON, **headers})
        assert resp.status == status
        if status == 403:
            assert (await resp.json())["error"] == "forbidden_source"
    assert await redis_client.xlen(redis_keys.EVENTS_STREAM) == (1 if status == 200 else 0)
    if status == 403:
        assert await stored_nothing(redis_client)


def test_client_address_and_parse_ip() -> None:
    trusted = [ip_network("10.0.0.0/8")]

    def headers(**values: str) -> CIMultiDictProxy[str]:
        return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in values.items()}))

    assert parse_ip("[2001:db8::1]:443") == ip_address("2001:db8::1")
    assert parse_ip("2001:db8::1") == ip_address("2001:db8::1")
    assert parse_ip("192.0.2.1:8080") == ip_address("192.0.2.1")
    assert parse_ip("unknown") is None and parse_ip("_hidden") is None and parse_ip("") is None
    assert client_address("10.0.0.2", headers(X_Forwarded_For="192.0.2.9"), trusted) == \
        ip_address("192.0.2.9")
    assert client_address("192.0.2.7", headers(X_Forwarded_For="10.9.9.9"), trusted) == \
        ip_address("192.0.2.7")
    # Forwarded is not read, even from a trusted proxy: the proxy's own address stays.
    assert client_address("10.0.0.2", headers(Forwarded='for="[2001:db8::5]:80"'), trusted) == \
        ip_address("10.0.0.2")
    both = headers(Forwarded="for=192.0.2.66", X_Forwarded_For="[2001:db8::5]:80")
    assert client_address("10.0.0.2", both, trusted) == ip_address("2001:db8::5")
    # A deployment whose proxy uses another header names it; then only that one counts.
    assert client_address("10.0.0.2", headers(X_Real_IP="192.0.2.7", X_Forwarded_For="192.0.2.9"),
                          trusted, "X-Real-IP") == ip_address("192.0.2.7")


async def _rejected_eventually(client: aioredis.Redis) -> list[Any]:
    for _ in range(500):
        found = await client.xrange(redis_keys.REJECTED_STREAM)
        if found:
            return [fields for _id, fields in found]
        await asyncio.sleep(0.01)  # polling a condition, bounded by the loop count
    raise AssertionError("nothing reached the rejected stream")

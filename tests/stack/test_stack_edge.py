"""The edge through a real HAProxy (generated config, `LocalStack`): the client's address is
the proxy's header only (forged `Forwarded` / `X-Forwarded-For` change nothing), TLS
terminates at the load balancer (https webhooks, wss media), slow and greedy sources are
bounded (header timeout, per-source connection and in-flight webhook caps)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.faults.slow_client import dribble_request_head
from callbridge.services.stack.haproxy import EdgeLimits, haproxy_binary
from callbridge.services.stack.runner import LocalStack, StackOptions
from callbridge.shared import redis_keys
from callbridge.shared.infobip_media import build_connected
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ALLOWED_CLIENT = "127.0.0.2"   # the only source the ingress allows
ATTACKER = "127.0.0.3"         # any other source (loopback: Linux routes all of 127/8)
NO_ORCHESTRATOR = {"ingress": 1, "orchestrator": 0, "gateway": 1}


def _probe(key: str) -> bytes:
    return orjson.dumps({"type": "LOAD_PROBE", "callId": key,
                         "timestamp": "2026-01-15T12:00:00.000+0000", "properties": {}})


@contextlib.asynccontextmanager
async def _stack(tmp_path: Path, **options: object) -> AsyncIterator[LocalStack]:
    if haproxy_binary() is None:
        pytest.skip("haproxy is not installed (scripts/bootstrap.sh installs it)")
    stack_options = StackOptions(replicas=dict(NO_ORCHESTRATOR), load_balancer=True,
                                 log_dir=tmp_path / "logs", **options)  # type: ignore[arg-type]
    async with LocalStack(stack_options) as stack:
        yield stack


async def _post_from(source: str, url: str, body: bytes, headers: dict[str, str],
                     ssl_context: ssl.SSLContext | None = None) -> int:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True,
                                     ssl=ssl_context if ssl_context is not None else True)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.post(url, data=body, headers={"Content-Type": "application/json",
                                                      **headers}) as resp:
            return resp.status


async def _stored_keys(stack: LocalStack) -> set[str]:
    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        return {f[b"call_id"].decode()
                for _, f in await client.xrange(redis_keys.EVENTS_STREAM)}
    finally:
        await client.aclose()


# One header for the client's address --------------------------------------------------------

async def test_forged_forwarding_headers_do_not_pass_the_allowlist(tmp_path: Path) -> None:
    env = {"WEBHOOK_ALLOWLIST": f"{ALLOWED_CLIENT}/32", "WEBHOOK_TRUSTED_PROXIES": "127.0.0.1/32"}
    async with _stack(tmp_path, extra_env=env) as stack:
        # The stack runs with webhook auth by default (a generated Basic password, also
        # given to the simulated Infobip): no credentials, no entry.
        auth = stack.webhook_auth_header
        assert auth["Authorization"].startswith("Basic ")
        assert await _post_from(ALLOWED_CLIENT, stack.webhook_url, _probe("no-auth"), {}) == 401
        forged = {**auth, "Forwarded": f"for={ALLOWED_CLIENT}",
                  "X-Forwarded-For": ALLOWED_CLIENT, "X-Real-IP": ALLOWED_CLIENT}
        # Through HAProxy: both forged headers are replaced by the real source.
        assert await _post_from(ATTACKER, stack.webhook_url, _probe("forged-lb"), forged) == 403
        # Straight to the ingress: the attacker is no trusted proxy, its headers are ignored.
        direct = f"http://127.0.0.1:{stack.replicas('ingress')[0].port}/webhook"
        assert await _post_from(ATTACKER, direct, _probe("forged-direct"), forged) == 403
        # The allowed client through HAProxy is recognised by the header HAProxy set (the
        # ingress' TCP peer is HAProxy at 127.0.0.1, which is not allowlisted).
        assert await _post_from(ALLOWED_CLIENT, stack.webhook_url, _probe("real"), auth) == 200
        assert await _stored_keys(stack) == {"real"}


# TLS at the load balancer -------------------------------------------------------------------

def _self_signed(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 (openssl CLI), as HAProxy wants it: chain + key in one
    PEM; and a client context trusting exactly it."""
    cert, key, pem = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "lb.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    context = ssl.create_default_context(cafile=str(cert))
    return pem, context


async def test_tls_terminates_at_the_load_balancer(tmp_path: Path) -> None:
    pem, context = _self_signed(tmp_path)
    async with _stack(tmp_path, tls_cert=pem) as stack:
        assert stack.webhook_url.startswith("https://")
        assert stack.media_url.startswith("wss://")
        status = await _post_from("127.0.0.1", stack.webhook_url, _probe("over-tls"),
                                  stack.webhook_auth_header, context)
        assert status == 200
        assert await _stored_keys(stack) == {"over-tls"}
        # Plain HTTP on the TLS port gets no answer from the ingress.
        plain = stack.webhook_url.replace("https://", "http://")
        with pytest.raises((aiohttp.ClientError, asyncio.TimeoutError)):
            await _post_from("127.0.0.1", plain, _probe("plain"), stack.webhook_auth_header)
        # wss: the upgrade reaches the gateway (101 through HAProxy), which then refuses a
        # media leg without a token with its own close code.
        async with connect(stack.media_url, ssl=context, open_timeout=10) as ws:
            await ws.send(build_connected(16000, {"cbCallId": "tls-probe"}))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


# Slow and greedy sources --------------------------------------------------------------------

async def test_lb_cuts_header_dribblers_and_caps_each_source(tmp_path: Path) -> None:
    limits = EdgeLimits(http_request_timeout_s=1.0, max_conn_per_source=4,
                        max_webhook_conn_per_source=2)
    async with _stack(tmp_path, edge_limits=limits) as stack:
        port = stack.lb_port
        # A header dribbler gets 408 from HAProxy after `timeout http-request`.
        took, answer = await dribble_request_head(port, 10, source="127.0.0.5")
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert took < 5, took

        # Connections per source: 4 held open, the 5th is refused on accept.
        held = [await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.6", 0))
                for _ in range(4)]
        try:
            await wait_until(lambda: _lb_sessions(stack, "public", "FRONTEND") >= 4, 5,
                             "HAProxy to accept the 4 held connections")
            assert await _fifth_connection_answer(port, "127.0.0.6") == b""
            # Another source is not affected.
            assert await _post_from("127.0.0.7", stack.webhook_url, _probe("other-source"),
                                    stack.webhook_auth_header) == 200
        finally:
            for _, w in held:
                w.close()

        # Webhooks in flight per source: with Redis writes paused (shorter than the
        # ingress' INGRESS_APPEND_TIMEOUT_S, 2 s), 2 wait for their XADD,
        # the 3rd from the same source is refused at once with 429.
        admin = aioredis.Redis.from_url(stack.redis_url)
        try:
            await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
            waiting = [asyncio.create_task(_post_from("127.0.0.8", stack.webhook_url,
                                                      _probe(f"held-{i}"),
                                                      stack.webhook_auth_header))
                       for i in range(2)]
            await wait_until(lambda: _lb_sessions(stack, "ingress", "BACKEND") >= 2, 5,
                             "2 webhooks in flight")
            started = time.monotonic()
            third = await _post_from("127.0.0.8", stack.webhook_url, _probe("third"),
                                     stack.webhook_auth_header)
            assert third == 429 and time.monotonic() - started < 1
            assert await asyncio.gather(*waiting) == [200, 200]
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
            await admin.aclose()


async def _fifth_connection_answer(port: int, source: str) -> bytes:
    """What a request on one more connection from `source` gets: b"" when HAProxy
    rejected the connection (reset at connect, or closed before answering)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                       local_addr=(source, 0))
    except (ConnectionError, OSError):
        return b""
    try:
        writer.write(b"GET /webhook HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(100), 5)
    except (ConnectionError, OSError):
        return b""
    finally:
        writer.close()


def _lb_sessions(stack: LocalStack, proxy: str, server: str) -> int:
    """Current sessions of one HAProxy proxy/server (stats CSV `scur`), read synchronously
    with a short timeout: the polled condition of wait_until."""
    import csv
    import io
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{stack.lb_stats_port}/stats;csv",
                                timeout=1) as resp:
        text = resp.read().decode().lstrip("# ")
    for row in csv.DictReader(io.StringIO(text)):
        if row["pxname"] == proxy and row["svname"] == server:
            return int(row["scur"] or 0)
    return 0

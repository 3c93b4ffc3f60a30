"""Webhook ingress over HTTP: what is stored on 200, each refusal status and its JSON body,
the rejected stream, health/readiness/metrics, graceful shutdown, several processes on one
port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from callbridge.services.webhook_ingress.server import serve
from callbridge.shared import redis_keys
from callbridge.shared.redis_server import free_port
from tests.ingress.fixtures import (
    AUTH_JSON,
    JSON,
    TEST_BASIC_PASSWORD,
    TEST_BASIC_USER,
    event,
    ingress_client,
    make_settings,
    state_of,
)

ROOT = Path(__file__).resolve().parents[2]


async def entries(client: aioredis.Redis, stream: str = redis_keys.EVENTS_STREAM,
                  ) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in await client.xrange(stream)]


@pytest.fixture
async def ingress(redis_url: str) -> AsyncIterator[Any]:
    async with ingress_client(make_settings(redis_url, ingress_max_body_bytes=1024)) as client:
        yield client


async def test_200_stores_exactly_the_raw_body_and_fields(ingress: Any,
                                                          redis_client: aioredis.Redis) -> None:
    # Odd spacing, key order and non-ASCII: the stream must keep the bytes, not a re-dump.
    body = (b'{ "callId":"c-7",  "type" : "CALL_RECEIVED", "x":"\xc3\xa9t\xc3\xa9",\n'
            b'"properties":{}}')
    before = int(time.time() * 1000)
    resp = await ingress.post("/webhook", data=body, headers=JSON)
    after = int(time.time() * 1000)
    assert resp.status == 200
    answer = await resp.json()
    assert answer["status"] == "accepted"
    stored = await redis_client.xrange(redis_keys.EVENTS_STREAM)
    assert len(stored) == 1
    entry_id, fields = stored[0]
    assert entry_id.decode() == answer["id"]
    assert set(fields) == {b"body", b"type", b"call_id", b"received_at"}
    assert fields[b"body"] == body
    assert fields[b"type"] == b"CALL_RECEIVED"
    assert fields[b"call_id"] == b"c-7"
    assert before <= int(fields[b"received_at"]) <= after


async def test_unknown_types_and_fields_are_accepted_and_stored(
        ingress: Any, redis_client: aioredis.Redis) -> None:
    new = event(None, "CALL_TELEPORTED", brandNewField={"nested": [1, 2, 3]})
    finished = orjson.dumps({"type": "CALL_FINISHED", "properties": {"callLog": {
        "callId": "c-9", "state": "FINISHED", "futureField": True}}})
    for body in (new, finished):
        resp = await ingress.post("/webhook", data=body, headers=JSON)
        assert resp.status == 200, await resp.text()
    stored = await entries(redis_client)
    assert [(f[b"type"], f[b"call_id"], f[b"body"]) for f in stored] == [
        (b"CALL_TELEPORTED", b"", new), (b"CALL_FINISHED", b"c-9", finished)]


@pytest.mark.parametrize(("body", "code"), [
    (b'{"type": "CALL_RECEIVED", ', "invalid_json"),
    (b"\xff\xfe not utf-8", "invalid_json"),
    (b"[1, 2]", "invalid_event"),
    (b'{"callId": "c-1"}', "invalid_event"),
    (b'{"type": ""}', "invalid_event"),
    (b'{"type": "CALL_RECEIVED", "properties": {"call": {"id": 5}}}', "invalid_event"),
])
async def test_400_names_the_problem_and_keeps_the_body(
        ingress: Any, redis_client: aioredis.Redis, body: bytes, code: str) -> None:
    resp = await ingress.post("/webhook", data=body, headers=JSON)
    assert resp.status == 400
    answer = await resp.json()
    assert answer["error"] == code and answer["detail"]
    assert await entries(redis_client) == []
    rejected = await _wait_rejected(redis_client, 1)
    assert rejected[0][b"body"] == body
    assert rejected[0][b"reason"] == code.encode()
    assert rejected[0][b"status"] == b"400"


@pytest.mark.parametrize(("headers", "code"), [
    ({"Content-Type": "text/plain"}, "unsupported_media_type"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, "unsupported_media_type"),
    ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, "unsupported_encoding"),
])
async def test_415_wrong_content_type(ingress: Any, redis_client: aioredis.Redis,
                                      headers: dict[str, str], code: str) -> None:
    resp = await ingress.post("/webhook", data=event("c-1"), headers=headers)
    assert resp.status == 415
    assert (await resp.json())["error"] == code
    assert await entries(redis_client) == []
    assert (await _wait_rejected(redis_client, 1))[0][b"reason"] == code.encode()


async def test_415_missing_content_type(ingress: Any) -> None:
    resp = await ingress.post("/webhook", data=event("c-1"),
                              skip_auto_headers=["Content-Type"])
    assert resp.status == 415


async def test_json_with_charset_and_plus_json_are_accepted(ingress: Any) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.infobip+json"):
        resp = await ingress.post("/webhook", data=event("c-1"),
                                  headers={"Content-Type": content_type})
        assert resp.status == 200


async def test_413_declared_and_chunked_bodies_are_bounded(
        ingress: Any, redis_client: aioredis.Redis) -> None:
    big = b'{"type":"CALL_RECEIVED","pad":"' + b"x" * 5000 + b'"}'
    resp = await ingress.post("/webhook", data=big, headers=JSON)
    assert resp.status == 413
    assert (await resp.json())["error"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
        for _ in range(50):
            yield b"y" * 512

    resp = await ingress.post("/webhook", data=chunks(), headers=JSON)
    assert resp.status == 413
    assert await entries(redis_client) == []
    rejected = await _wait_rejected(redis_client, 2)
    assert {r[b"reason"] for r in rejected} == {b"body_too_large"}
    assert all(len(r[b"body"]) == 1024 for r in rejected)  # truncated to the limit


async def test_rejected_stream_is_bounded(redis_url: str,
                                          redis_client: aioredis.Redis) -> None:
    settings = make_settings(redis_url, rejected_maxlen=10)
    async with ingress_client(settings) as client:
        for i in range(250):
            resp = await client.post("/webhook", data=b"nope %d" % i, headers=JSON)
            assert resp.status == 400
        await _wait_rejected_count(client)
    # MAXLEN ~ trims whole macro nodes (100 entries), so "about 10", never all 250.
    assert await redis_client.xlen(redis_keys.REJECTED_STREAM) < 250


async def test_health_ready_and_metrics(ingress: Any) -> None:
    assert (await ingress.get("/healthz")).status == 200
    ready = await ingress.get("/readyz")
    assert ready.status == 200 and (await ready.json())["ready"] is True
    for i in range(3):
        await ingress.post("/webhook", data=event(f"c-{i}"), headers=JSON)
    await ingress.post("/webhook", data=b"{", headers=JSON)
    text = await (await ingress.get("/metrics")).text()
    assert 'callbridge_ingress_requests_total{status="200"} 3.0' in text
    assert 'callbridge_ingress_requests_total{status="400"} 1.0' in text
    for name in ("callbridge_ingress_xadd_flush_seconds_bucket",
                 "callbridge_ingress_xadd_batch_size_bucket", "callbridge_ingress_in_flight"):
        assert name in text


async def test_custom_webhook_path(redis_url: str) -> None:
    async with ingress_client(make_settings(redis_url, webhook_path="/infobip/events")) as c:
        assert (await c.post("/infobip/events", data=event("c-1"), headers=JSON)).status == 200
        assert (await c.post("/webhook", data=event("c-1"), headers=JSON)).status == 404


async def test_shutdown_readiness_false_first_then_in_flight_finishes(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    port = free_port()
    settings = make_settings(redis_url, ingress_port=port, ingress_drain_delay_s=3.0,
                             ingress_append_timeout_s=10.0)
    stop = asyncio.Event()
    listening = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop=stop, on_ready=lambda _: listening.set()))
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.wait_for(listening.wait(), 10)
        async with aiohttp.ClientSession() as http:
            assert (await http.get(f"{base}/readyz")).status == 200
            # Hold Redis writes so one webhook is in flight when the stop arrives.
            await redis_client.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
            pending = asyncio.create_task(
                http.post(f"{base}/webhook", data=event("c-inflight"), headers=AUTH_JSON))
            await _until(lambda: _in_flight_metric(http, base), 10)
            stop.set()
            ready = await http.get(f"{base}/readyz")
            assert ready.status == 503
            assert (await ready.json())["reason"] == "shutting_down"
            resp = await asyncio.wait_for(pending, 15)
            assert resp.status == 200
        await asyncio.wait_for(server, 20)
    finally:
        stop.set()
        if not server.done():
            server.cancel()
            with contextlib.suppress(BaseException):
                await server
    assert [f[b"call_id"] for f in await entries(redis_client)] == [b"c-inflight"]


async def test_two_processes_share_one_port(redis_url: str,
                                            redis_client: aioredis.Redis) -> None:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "LOG_FORMAT": "json",
           "WEBHOOK_BASIC_USER": TEST_BASIC_USER, "WEBHOOK_BASIC_PASSWORD": TEST_BASIC_PASSWORD}
    cmd = [sys.executable, "-m", "callbridge.services.webhook_ingress", "--port", str(port),
           "--host", "127.0.0.1", "--drain-delay", "0"]
    procs = [_start(cmd, env) for _ in range(2)]
    try:
        for proc in procs:  # each logs "ingress listening" once bound (or exits on failure)
            await asyncio.wait_for(asyncio.to_thread(_wait_line, proc, b"ingress listening"), 30)
        pids: set[int] = set()
        for i in range(60):  # fresh connections: the kernel spreads them over both
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(force_close=True)) as http:
                resp = await http.post(f"http://127.0.0.1:{port}/webhook",
                                       data=event(f"c-{i}"), headers=AUTH_JSON)
                assert resp.status == 200
                metrics = await (await http.get(f"http://127.0.0.1:{port}/metrics")).text()
            pids.add(_pid_from_metrics(metrics))
            if len(pids) == 2 and i >= 9:
                break
        assert pids == {p.pid for p in procs}
        assert await redis_client.xlen(redis_keys.EVENTS_STREAM) == i + 1
        procs[0].send_signal(signal.SIGTERM)  # graceful: exit 0, the other keeps serving
        assert await asyncio.to_thread(procs[0].wait, 20) == 0
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"http://127.0.0.1:{port}/webhook",
                                   data=event("c-after"), headers=AUTH_JSON)
            assert resp.status == 200
    finally:
        await asyncio.to_thread(_stop_all, procs)


# helpers -------------------------------------------------------------------------------

def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE)


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def _wait_line(proc: subprocess.Popen[bytes], needle: bytes) -> None:
    assert proc.stderr is not None
    for _ in range(200):
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"ingress exited ({proc.poll()}) before {needle!r}")
        if needle in line:
            return
    raise AssertionError(f"no {needle!r} in the first 200 log lines")


def _pid_from_metrics(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("callbridge_ingress_process_id "):
            return int(float(line.split()[1]))
    raise AssertionError("no process id metric")


async def _in_flight_metric(http: aiohttp.ClientSession, base: str) -> bool:
    text = await (await http.get(f"{base}/metrics")).text()
    return "callbridge_ingress_in_flight 1.0" in text


async def _until(check: Any, timeout: float) -> None:
    """Wait for a condition, polling, bounded in time and count."""
    deadline = time.monotonic() + timeout
    for _ in range(10_000):
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def _wait_rejected(client: aioredis.Redis, count: int) -> list[dict[bytes, bytes]]:
    """The rejected stream is written best-effort after the answer: wait for it (bounded)."""
    async def enough() -> bool:
        return int(await client.xlen(redis_keys.REJECTED_STREAM)) >= count
    await _until(enough, 10)
    return await entries(client, redis_keys.REJECTED_STREAM)


async def _wait_rejected_count(client: Any) -> None:
    appender = state_of(client).appender
    assert appender is not None

    async def drained() -> bool:
        return appender.idle
    await _until(drained, 10)

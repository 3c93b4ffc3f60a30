"""The Calls API key goes only to Infobip: a webhook's apiBaseUrl is checked, ids cannot
steer a request to another path, and jobs in Redis are data, not code."""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from pydantic import ValidationError

from callbridge.services.call_orchestrator import call_record
from callbridge.services.call_orchestrator.api_hosts import ApiBasePolicy, host_allowed
from callbridge.services.call_orchestrator.calls_api import path_segment
from callbridge.services.call_orchestrator.metrics import API_BASE_REFUSED
from callbridge.shared import redis_keys
from callbridge.shared.infobip_events import CallsEvent
from tests.orchestrator.fixtures import (
    dialog_posts,
    make_event,
    quiet_call,
    running,
    sim_stack,
    xadd_event,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

CONFIGURED = "https://abc123.api.infobip.com"
POLICY = ApiBasePolicy(CONFIGURED, ("api.infobip.com", "*.api.infobip.com"))


@pytest.mark.parametrize(("api_base_url", "expected", "reason"), [
    ("https://abc123.api.infobip.com", "https://abc123.api.infobip.com", None),
    ("https://xyz.api.infobip.com/", "https://xyz.api.infobip.com", None),
    ("https://API.infobip.com", "https://api.infobip.com", None),
    ("xyz.api.infobip.com", "https://xyz.api.infobip.com", None),  # no scheme: https
    ("https://evil.example.com", None, "host"),
    ("https://api.infobip.com.evil.example", None, "host"),
    ("https://evilapi.infobip.com", None, "host"),
    ("http://xyz.api.infobip.com", None, "not_https"),
    ("https://xyz.api.infobip.com:8443", None, "port"),
    ("https://xyz.api.infobip.com/calls/1/../../x", None, "path"),
    ("https://xyz.api.infobip.com?next=evil", None, "path"),
    ("https://xyz.api.infobip.com@evil.example.com", None, "userinfo"),
    ("https://user:pw@xyz.api.infobip.com", None, "userinfo"),
    ("ftp://xyz.api.infobip.com", None, "malformed"),
    ("https://", None, "malformed"),
    ("https://xyz.api.infobip.com:99999", None, "malformed"),
    ("https://x y.api.infobip.com", None, "malformed"),
    ("https://" + "a." * 300 + "api.infobip.com", None, "malformed"),
])
def test_api_base_policy(api_base_url: str, expected: str | None, reason: str | None) -> None:
    assert POLICY.check(api_base_url) == (expected, reason)


def test_configured_origin_is_always_allowed_even_over_http() -> None:
    """The simulator (and a lab proxy) serve plain http: the configured origin is trusted
    because the operator configured it, not because a webhook named it."""
    policy = ApiBasePolicy("http://127.0.0.1:8080", ("*.api.infobip.com",))
    assert policy.check("http://127.0.0.1:8080/") == ("http://127.0.0.1:8080", None)
    assert policy.check("http://127.0.0.1:8081") == (None, "not_https")
    assert policy.choose("https://127.0.0.1") == "http://127.0.0.1:8080"


def test_host_patterns() -> None:
    assert host_allowed("a.b.api.infobip.com", ["*.api.infobip.com"])
    assert not host_allowed("api.infobip.com", ["*.api.infobip.com"])
    assert host_allowed("api.infobip.com", ["api.infobip.com"])


def test_a_misconfigured_base_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="INFOBIP_BASE_URL"):
        ApiBasePolicy("https://abc.api.infobip.com/calls/1", ())


@pytest.mark.parametrize("call_id", ["../../x", "a/b", "x?y=1", "id#frag", "a b", "%2e%2e",
                                     "", "é", "x" * 200])
def test_ids_that_could_steer_a_path_are_refused_at_the_door(call_id: str) -> None:
    body = {"type": "CALL_RECEIVED", "callId": call_id}
    with pytest.raises(ValidationError):
        CallsEvent.model_validate(body)
    nested = {"type": "CALL_FINISHED", "properties": {"callLog": {"callId": call_id}}}
    with pytest.raises(ValidationError):
        CallsEvent.model_validate(nested)


def test_ids_in_paths_are_escaped_as_one_segment() -> None:
    assert path_segment("../x?y#z") == "..%2Fx%3Fy%23z"


@asynccontextmanager
async def foreign_host() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """An attacker's server: it records whatever reaches it."""
    seen: list[web.Request] = []

    async def anything(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response({"id": "stolen"}, status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_forged_api_base_url_never_receives_the_key(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    """A real call whose CALL_RECEIVED names a foreign apiBaseUrl is bridged through the
    configured base URL; the foreign host sees nothing, and the refusal is counted."""
    async with sim_stack(redis_url) as env, foreign_host() as (foreign, seen):
        sim = env["sim"]
        before = API_BASE_REFUSED.labels("not_https")._value.get()
        own_base = sim.base_url
        sim.base_url = foreign  # the simulator's events now name the attacker's host
        try:
            call = await sim.place_call(quiet_call())
        finally:
            sim.base_url = own_base
        async with running(env["settings"]):
            async def bridged() -> bool:
                rec = await call_record.load(redis_client, call.call_id)
                return bool(rec.get("dialog_id"))

            await wait_until(bridged, timeout=15, what="the call bridged")
            rec = await call_record.load(redis_client, call.call_id)
    assert seen == []
    assert len(dialog_posts(sim, call.call_id)) == 1
    assert rec["api_base_url"] == own_base  # hang-ups and transfers follow the safe URL
    assert API_BASE_REFUSED.labels("not_https")._value.get() == before + 1


async def test_forged_event_for_an_unknown_call_sends_nothing_abroad(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    async with sim_stack(redis_url) as env, foreign_host() as (foreign, seen):
        body = make_event("CALL_RECEIVED", "00000000-0000-4000-8000-000000000001",
                          apiBaseUrl=foreign.replace("http://", "https://"))
        await xadd_event(redis_client, body)
        async with running(env["settings"]):
            async def handled() -> bool:
                return await redis_client.xlen(redis_keys.DEAD_LETTER_STREAM) > 0

            await wait_until(handled, timeout=15, what="the forged call dead-lettered")
    assert seen == []


async def test_jobs_are_json_not_pickle(redis_url: str, redis_client: aioredis.Redis) -> None:
    """Write access to Redis must not be code execution in the orchestrator: a job is JSON,
    and a pickled job planted in the queue is refused, not unpickled."""
    async with sim_stack(redis_url) as env:
        call = await env["sim"].place_call(quiet_call())
        async with running(env["settings"]):
            async def bridged() -> bool:
                rec = await call_record.load(redis_client, call.call_id)
                return bool(rec.get("dialog_id"))

            await wait_until(bridged, timeout=15, what="the call bridged")

            async def results() -> list[bytes]:
                # The finished jobs' kept results (SCAN is no snapshot of keys that change
                # while it runs, so wait for the records to settle).
                keys = [k async for k in redis_client.scan_iter(match="arq:result:*",
                                                                count=100)]
                return [v for k in keys if (v := await redis_client.get(k))]

            await wait_until(results, timeout=15, what="a kept job result")
            payloads = await results()
            assert all(p.startswith(b"{") for p in payloads)
            assert not any(p[:1] == b"\x80" for p in payloads)  # pickle protocol 2+

            planted = pickle.dumps({"t": 1, "f": "handle_event", "a": [], "k": {}})
            await redis_client.set("arq:job:planted", planted)
            await redis_client.zadd(redis_keys.JOB_QUEUE, {"planted": 1})

            async def refused() -> bool:
                return not await redis_client.exists("arq:job:planted")

            await wait_until(refused, timeout=15, what="the planted job refused")
    result = await redis_client.get("arq:result:planted")
    assert result is None or orjson.loads(result).get("s") is False

"""Scenario 12d (attacks): forged webhooks that try to send the Calls API key to a foreign
host, or steer its requests to other paths, on the running multi-process stack.

An attacker who can post webhooks (or a compromised sender) names its own server as
`apiBaseUrl`, in every form a parser might accept, and ids built to climb out of their
path segment. Invariants: nothing reaches the foreign server; every request the Calls API
simulator receives is on one of the paths the orchestrator is meant to use; the
path-steering ids are refused at the door (400) and stored nowhere; a real call whose
events name the foreign host is still bridged, once, through the configured base URL.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
from aiohttp import web

from bench.faults.drive import dialogs_of, finish_all, post_raw, script, wait_async
from bench.faults.report import Row
from bench.faults.runner import Ctx
from bench.faults.stack import FaultOptions, decode
from callbridge.shared import redis_keys

#: The only paths the orchestrator may call (ids as the door admits them).
ALLOWED_PATHS = re.compile(
    r"^/calls/1/(dialogs|calls/[A-Za-z0-9][A-Za-z0-9._:-]*(/hangup)?)$")

PATH_STEERING_IDS = ("../../calls/1/dialogs", "x/../../y", "id?next=1", "id#f", "%2e%2e%2f",
                     "a b", "x" * 300)


def foreign_forms(foreign: str) -> list[str]:
    """The attacker's server, written every way a lenient parser might follow."""
    hostport = foreign.removeprefix("http://")
    return [foreign, f"https://{hostport}", hostport, f"https://x.api.infobip.com@{hostport}",
            f"https://{hostport}/calls/1", f"//{hostport}", f"https://api.infobip.com.{hostport}"]


@asynccontextmanager
async def foreign_server() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path_qs}")
        return web.json_response({"id": "stolen"}, status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


def forged_call_received(call_id: str, api_base_url: str) -> bytes:
    return orjson.dumps({
        "type": "CALL_RECEIVED", "callId": call_id,
        "timestamp": "2026-01-15T12:00:00.000+0000",
        "properties": {"apiBaseUrl": api_base_url, "call": {
            "id": call_id, "from": "41790000000", "to": "41790000001", "direction": "INBOUND",
            "state": "RINGING", "endpoint": {"type": "PHONE", "phoneNumber": "41790000000"}}}})


async def api_base_and_paths(ctx: Ctx, row: Row) -> None:
    opts = FaultOptions(replicas={"ingress": 1, "orchestrator": 1, "gateway": 1})
    async with ctx.stack("attack-orch", opts) as stack, foreign_server() as (foreign, seen):
        sim = stack.infobip
        assert sim is not None
        # A real call whose every event names the attacker's host.
        own_base = sim.base_url
        sim.base_url = foreign
        try:
            call = await sim.place_call(script(hangup_after_s=3))
        finally:
            sim.base_url = own_base
        forms = foreign_forms(foreign)
        statuses = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for form in forms:
                statuses.append(await post_raw(http, stack.webhook_url, forged_call_received(
                    str(uuid.uuid4()), form)))
            steering = [await post_raw(http, stack.webhook_url, forged_call_received(ident,
                                                                                    own_base))
                        for ident in PATH_STEERING_IDS]
        # The real call's own events keep arriving meanwhile: look for the ids themselves.
        entries = await stack.redis_client.xrange(redis_keys.EVENTS_STREAM, count=10_000)
        stored_after = sum(1 for _, fields in entries
                           if decode(fields.get(b"call_id", b"")) in PATH_STEERING_IDS)
        row.events = len(forms) + len(steering) + len(call.events_posted)
        row.faults = len(forms) + len(steering)
        unfinished = await finish_all([call], 30)

        async def forged_handled() -> bool:
            return await stack.redis_client.xlen(redis_keys.DEAD_LETTER_STREAM) >= len(forms)

        handled = await wait_async(forged_handled, 20, 0.2)
    row.calls = 1
    off_path = sorted({f"{r.method} {r.path}" for r in sim.requests
                       if not ALLOWED_PATHS.match(r.path)})
    dialogs = dialogs_of(sim, call.call_id)
    row.lost = 1 if dialogs == 0 else 0
    row.duplicated = max(0, dialogs - 1)
    row.cut = 0 if call.end_reason == "caller_hangup" else 1
    if unfinished:
        row.notes.append(f"the real call's leg had not finished flushing: {unfinished[0]}")
    row.notes.append(f"{len(forms)} foreign apiBaseUrl forms, {len(PATH_STEERING_IDS)} "
                     f"path-steering ids; the Calls API simulator saw {len(sim.requests)} "
                     "requests")
    row.check("nothing reached the foreign host", not seen, f"{len(seen)} requests: "
              f"{seen[:3]}")
    row.check("every Calls API request on an allowed path", not off_path, str(off_path[:3]))
    row.check("forged events with foreign URLs accepted as events (200)",
              all(s == 200 for s in statuses), str(statuses))
    row.check("path-steering ids refused at the door", all(s == 400 for s in steering),
              str(steering))
    row.check("path-steering ids stored nowhere", stored_after == 0,
              f"{stored_after} entries appended")
    row.check("forged calls settled (dead-lettered: the platform knows no such call)",
              handled, "the forged calls' jobs did not finish in 20 s")
    row.check("the real call bridged once through the configured URL", dialogs == 1,
              f"{dialogs} dialogs")
    row.check("the real call ended by its caller", row.cut == 0, f"ended {call.end_reason}")

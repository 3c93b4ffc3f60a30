"""Scenarios 2 and 3: duplicated / out-of-order / replayed webhooks with an orchestrator
SIGKILLed mid-job, and a Calls API storm.

Invariant (2): exactly one dialog per call at the Calls API simulator, whatever arrives how
often and in which order, and however often the stream is replayed.
Invariant (3): every call is bridged (one dialog) or dead-lettered with its reason, and no
request reaches the simulator before the Retry-After it was given (`sim.early_retries`).
"""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import orjson

from bench.faults.drive import dialogs_of, finish_all, place_calls, post_raw, script, wait_async
from bench.faults.report import Row
from bench.faults.runner import Ctx
from bench.faults.stack import FaultOptions, FaultStack, decode
from callbridge.services.stack.processes import ManagedProcess, ProcessSpec, callbridge_argv
from callbridge.shared import redis_keys
from callbridge.shared.redis_server import free_port
from callbridge.simulators.infobip import CallScript, InfobipSimulator, SimCall


async def _replay(stack: FaultStack, from_id: str, to_id: str) -> tuple[int, str]:
    """`callbridge replay --from-id A --to-id B --yes`, as an operator would run it."""
    proc = await asyncio.create_subprocess_exec(
        *callbridge_argv("replay", "--from-id", from_id, "--to-id", to_id, "--yes"),
        env={**stack.service_env(), "COLUMNS": "120"}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "replay timed out"
    return proc.returncode or 0, out.decode(errors="replace")


async def _stream_range(stack: FaultStack) -> tuple[str, str]:
    client = stack.redis_client
    first = await client.xrange(redis_keys.EVENTS_STREAM, count=1)
    last = await client.xrevrange(redis_keys.EVENTS_STREAM, count=1)
    return decode(first[0][0]), decode(last[0][0])


async def _settled(stack: FaultStack) -> bool:
    """No queued arq job and nothing pending or unread in the events consumer group."""
    client = stack.redis_client
    if await client.zcard(redis_keys.JOB_QUEUE):
        return False
    for group in await client.xinfo_groups(redis_keys.EVENTS_STREAM):
        if group.get("pending") or group.get("lag"):
            return False
    return True


async def _repost(url: str, calls: list[SimCall], copies: int, rng: random.Random,
                  only_type: str | None = None) -> int:
    """Post each call's events `copies` more times, shuffled across calls (out of order)."""
    bodies = [orjson.dumps(e) for c in calls for e in list(c.events_posted)
              if only_type is None or e.get("type") == only_type] * copies
    rng.shuffle(bodies)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        sem = asyncio.Semaphore(8)

        async def one(body: bytes) -> int:
            async with sem:
                return await post_raw(http, url, body)
        statuses = await asyncio.gather(*(one(b) for b in bodies))
    return sum(1 for s in statuses if s == 200)


async def duplicates(ctx: Ctx, row: Row) -> None:
    n = ctx.size(6, 20)
    hangup = ctx.sizef(9, 12)
    rng = random.Random(2)
    opts = FaultOptions(replicas={"ingress": 1, "orchestrator": 2, "gateway": 1})
    async with ctx.stack("dup-replay", opts) as stack:
        sim = stack.infobip
        assert sim is not None
        # A third orchestrator dies at its first dialog claim, before its POST: a call's job
        # is certainly caught mid-way by a death, and its takeover is timed.
        doomed = await _start_doomed_orchestrator(stack, "bridge.claimed")
        # Half the dialog requests hang 1.5 s at the "platform": jobs are mid-request when
        # orchestrator-1 dies (the request still takes effect, like a slow real server).
        sim.faults.delay_next(n // 2, 1.5, path_prefix="/calls/1/dialogs")
        calls = await place_calls(sim, n, lambda: script(hangup_after_s=hangup), rate=10)
        row.events += await _repost(stack.webhook_url, calls, 2, rng, "CALL_RECEIVED")
        await wait_async(lambda: _any_dialog_request(stack), 10, 0.02)
        t_kill = time.time()
        stack.process("orchestrator-1").send_signal(9)
        row.faults = 1
        doomed_died = await wait_async(lambda: _dead(doomed), 10, 0.01)
        t_doomed = time.time()
        row.faults += 1 if doomed_died else 0
        first, last = await _stream_range(stack)
        code, out = await _replay(stack, first, last)
        row.faults += 1
        row.check("replay ran", code == 0, out[-300:])
        unfinished = await finish_all(calls, hangup + 40)
        row.events += await _repost(stack.webhook_url, calls, 2, rng)
        first, last = await _stream_range(stack)
        code, out = await _replay(stack, first, last)
        row.faults += 1
        row.check("second replay ran", code == 0, out[-300:])
        settled = await wait_async(lambda: _settled(stack), 30, 0.3)
        row.events += sum(len(c.events_posted) for c in calls)
        unbridged = [c.call_id for c in calls if decode(await stack.redis_client.hget(
            redis_keys.call_record(c.call_id), "unbridged")) == "1"]
    row.calls = n
    per_call = {c.call_id: dialogs_of(sim, c.call_id) for c in calls}
    # A call the orchestrator recorded as never bridged is lost, whatever else happened.
    row.lost = sum(1 for cid, v in per_call.items() if v == 0 or cid in unbridged)
    row.duplicated = sum(v - 1 for v in per_call.values() if v > 1)
    row.cut = sum(1 for c in calls if c.end_reason != "caller_hangup") + len(unfinished)
    bridged = [c.timeline["media_connected"] for c in calls if "media_connected" in c.timeline]
    if bridged:
        row.notes.append(f"kill -> last call's media up: {max(bridged) - t_kill:.2f} s")
    row.recovery_s = _death_to_dialog_request(sim, calls, t_doomed)
    row.check("the third orchestrator died at its kill point, holding a call", doomed_died
              and row.recovery_s is not None, "it never reached its first dialog claim"
              if not doomed_died else "no call was waiting for a dialog when it died")
    killed_1 = _death_to_dialog_request(sim, calls, t_kill)
    row.notes.append("orchestrator-1 SIGKILLed at the first dialog request: "
                     + (f"death -> dialog request {killed_1:.2f} s for the calls it held"
                        if killed_1 is not None else "it held no call before its POST"))
    row.check("exactly one dialog per call", row.lost == 0 and row.duplicated == 0,
              f"dialogs per call {sorted(per_call.values())}, recorded never bridged: "
              f"{len(unbridged)}")
    row.check("calls not cut", row.cut == 0,
              str([(c.call_id[:8], c.end_reason) for c in calls
                   if c.end_reason != "caller_hangup"]))
    row.check("work settled", settled, "arq queue or consumer group not drained in 30 s")


def _death_to_dialog_request(sim: InfobipSimulator, calls: list[SimCall],
                             t_kill: float) -> float | None:
    """Worker death -> dialog request, for the calls that were already ringing when the
    worker died but had no dialog request yet (the work the dead worker may have held):
    the longest of those waits, or None when there was no such call."""
    waits = []
    for call in calls:
        if call.timeline.get("webhook_sent", t_kill) >= t_kill:
            continue
        times = [r.at for r in sim.dialog_requests
                 if isinstance(r.json, dict) and r.json.get("parentCallId") == call.call_id]
        if times and min(times) > t_kill:
            waits.append(min(times) - t_kill)
    return round(max(waits), 2) if waits else None


#: An early request of another call arriving this soon after the announcement was already in
#: flight: no client could have known the Retry-After when it sent it.
IN_FLIGHT_S = 0.1


def _early(sim: InfobipSimulator) -> tuple[list[str], int]:
    """Split `sim.early_retries` into violations (the same call's request retried early, or
    any request arriving when the shared gate was surely known) and in-flight requests."""
    reqs = sorted(sim.requests, key=lambda r: r.at)
    violations: list[str] = []
    in_flight = 0
    for req in (r for r in reqs if r.early):
        announcer = next((r for r in reversed(reqs) if r.faulted and r.path == req.path
                          and (r.answered_at or r.at) <= req.at and r is not req), None)
        same = announcer is not None and (announcer.json or {}).get("parentCallId") == (
            req.json or {}).get("parentCallId")
        since = req.at - ((announcer.answered_at or announcer.at) if announcer else req.at)
        if same or since > IN_FLIGHT_S:
            violations.append(f"{req.method} {req.path} {since * 1000:.0f} ms after the "
                              f"announcement ({'same call' if same else 'other call'})")
        else:
            in_flight += 1
    return violations, in_flight


async def _start_doomed_orchestrator(stack: FaultStack, kill_at: str) -> ManagedProcess:
    """One more orchestrator (outside the LB plan), armed to SIGKILL itself at `kill_at`."""
    port = free_port()
    proc = stack.supervisor.start(ProcessSpec(
        name="orchestrator-doomed", argv=callbridge_argv("orchestrator"),
        env={**stack.service_env(), "ORCHESTRATOR_METRICS_PORT": str(port),
             "ORCHESTRATOR_KILL_AT": kill_at},
        ready_url=f"http://127.0.0.1:{port}/readyz"))
    await proc.wait_ready(30)
    return proc


async def _dead(proc: ManagedProcess) -> bool:
    return not proc.alive()


async def _any_dialog_request(stack: FaultStack) -> bool:
    assert stack.infobip is not None
    return bool(stack.infobip.dialog_requests)


async def storm(ctx: Ctx, row: Row) -> None:
    n = ctx.size(8, 40)
    storm_s = ctx.sizef(7, 30)
    opts = FaultOptions(replicas={"ingress": 1, "orchestrator": 2, "gateway": 1})
    async with ctx.stack("storm", opts) as stack:
        sim = stack.infobip
        assert sim is not None
        t0 = time.time()
        sim.faults.fail_ratio(0.5, statuses=(500, 502, 503, 429), retry_after=1.0,
                              duration_s=storm_s, seed=3, path_prefix="/calls/1/")
        row.faults = 1
        calls = await place_calls(sim, n, lambda: CallScript(
            caller_wav=None, reply_timeout_s=0.5, max_duration_s=storm_s + 30),
                                  rate=n / (storm_s * 0.8))
        unfinished = await finish_all(calls, storm_s + 45)
        dead = {decode(f.get(b"call_id", b"")): decode(f.get(b"error", b""))
                for _, f in await stack.redis_client.xrange(redis_keys.DEAD_LETTER_STREAM)}
    faulted = sum(1 for r in sim.requests if r.status in (429, 500, 502, 503))
    row.calls, row.events = n, len(sim.requests)
    row.notes.append(f"{faulted} API answers were storm faults; {len(dead)} dead letters")
    per_call = {c.call_id: dialogs_of(sim, c.call_id) for c in calls}
    bridged = [c for c in calls if per_call[c.call_id] == 1]
    lettered = [c for c in calls if per_call[c.call_id] == 0 and dead.get(c.call_id)]
    row.lost = n - len(bridged) - len(lettered)
    row.duplicated = sum(v - 1 for v in per_call.values() if v > 1)
    row.cut = sum(1 for c in bridged if c.end_reason != "caller_hangup") + len(unfinished)
    waits = [c.timeline["media_connected"] - c.timeline["webhook_sent"] for c in bridged
             if "media_connected" in c.timeline]
    row.recovery_s = round(max(waits), 2) if waits else None
    row.check("bridged or dead-lettered with reason", row.lost == 0,
              f"{row.lost} calls neither bridged nor dead-lettered")
    row.check("no duplicate dialog", row.duplicated == 0, f"{row.duplicated} extra dialogs")
    violations, in_flight = _early(sim)
    if in_flight:
        row.notes.append(f"{in_flight} request(s) of OTHER calls arrived < {IN_FLIGHT_S} s "
                         "after a Retry-After was announced (already in flight)")
    row.check("no request before its Retry-After", not violations,
              f"{len(violations)} early: {violations[:2]}")
    row.check("bridged calls not cut", row.cut == 0,
              str([(c.call_id[:8], c.end_reason) for c in bridged
                   if c.end_reason != "caller_hangup"]))
    row.notes.append(f"bridged {len(bridged)}, dead-lettered {len(lettered)} "
                     f"(elapsed {time.time() - t0:.0f} s)")


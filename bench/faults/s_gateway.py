"""Scenarios 5 and 6: a media gateway drained with SIGTERM, and one crashed with SIGKILL.

Invariant (5): no live call is cut within the drain window (each ends by its caller hanging
up, with no dead line: frame gap < 300 ms), new calls land on the other gateway through the
load balancer, and the drained gateway exits 0 once its last call ended.
Invariant (6): the crashed gateway's sessions are marked `gateway_lost` in Redis and each of
those callers is hung up or transferred through the Calls API within 10 s of the crash;
calls on the other gateway are undisturbed and new calls land there.
"""

from __future__ import annotations

import csv
import io
import signal
import time

import aiohttp

from bench.faults.drive import finish_all, place_calls, script, wait_async, wait_for
from bench.faults.report import Row
from bench.faults.runner import Ctx
from bench.faults.silence import max_frame_gap
from bench.faults.stack import FaultOptions, FaultStack, decode
from callbridge.shared import redis_keys
from callbridge.simulators.infobip import CallScript, SimCall

UNDISTURBED_GAP_MS = 300.0
LOST_BOUND_S = 10.0


async def lb_status(stack: FaultStack, backend: str, server: str) -> str:
    """HAProxy's view of one server (UP, DOWN, MAINT...) from its stats CSV."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        async with http.get(f"http://127.0.0.1:{stack.lb_stats_port}/stats;csv") as resp:
            text = (await resp.text()).lstrip("# ")
    for rec in csv.DictReader(io.StringIO(text)):
        if rec["pxname"] == backend and rec["svname"] == server:
            return rec["status"]
    return "?"


async def _gateway_of(stack: FaultStack, call_id: str) -> str:
    return decode(await stack.redis_client.hget(redis_keys.session_record(call_id),
                                                "gateway_id") or b"")


def _short() -> CallScript:
    """A caller who greets, says nothing and hangs up soon after the greeting."""
    return CallScript(caller_wav=None, reply_timeout_s=0.5, max_duration_s=30)


async def _spread_calls(ctx: Ctx, row: Row, stack: FaultStack, n: int,
                        hangup: float) -> tuple[list[SimCall], dict[str, str]]:
    sim = stack.infobip
    assert sim is not None
    ctx.phase(f"place {n} calls, wait for their greetings")
    calls = await place_calls(sim, n, lambda: script(hangup_after_s=hangup), rate=4)
    greeted = await wait_for(lambda: all("first_agent_audio" in c.timeline for c in calls), 20)
    row.check("every call heard its greeting before the fault", greeted,
              f"{sum('first_agent_audio' in c.timeline for c in calls)} of {n} in 20 s")
    return calls, {c.call_id: await _gateway_of(stack, c.call_id) for c in calls}


async def sigterm(ctx: Ctx, row: Row) -> None:
    n, m = ctx.size(4, 10), ctx.size(3, 6)
    hangup = ctx.sizef(10, 16)
    opts = FaultOptions(replicas={"ingress": 1, "orchestrator": 1, "gateway": 2},
                        load_balancer=True, env={"DRAIN_TIMEOUT_S": "60"})
    async with ctx.stack("gateway-sigterm", opts) as stack:
        sim = stack.infobip
        assert sim is not None
        calls, where = await _spread_calls(ctx, row, stack, n, hangup)
        ctx.phase("SIGTERM gateway-1, wait for the LB to mark it DOWN")
        t_term = time.time()
        stack.process("gateway-1").send_signal(signal.SIGTERM)
        row.faults = 1
        down = await wait_async(
            lambda: _is(stack, "gateway", "gateway-1", "DOWN"), 15, 0.1)
        row.recovery_s = round(time.time() - t_term, 2)
        row.check("LB marked the draining gateway down", down, "not DOWN in 15 s")
        ctx.phase(f"place {m} new calls, wait for every call to end")
        second = await place_calls(sim, m, _short, rate=4)
        unfinished = await finish_all(calls + second, hangup + 40)
        row.notes += [f"not ended: {u}" for u in unfinished]
        ctx.phase("wait for the drained gateway to exit")
        exit_code = await stack.process("gateway-1").wait_exit(30)
        after = {c.call_id: await _gateway_of(stack, c.call_id) for c in second}
    drained = [c for c in calls if where[c.call_id] == "gateway-1"]
    row.calls = n + m
    row.lost, row.duplicated = None, None
    cut = [c for c in calls + second if c.end_reason != "caller_hangup"]
    row.cut = len(cut) + len(unfinished)
    row.silence_ms = max((max_frame_gap(c.leg) for c in drained if c.leg), default=None)
    row.notes.append(f"first calls per gateway {sorted(where.values())}; new calls on "
                     f"{sorted(after.values())}")
    row.check("some calls were on the drained gateway", bool(drained), str(where))
    row.check("no call cut", row.cut == 0, str([(c.call_id[:8], c.end_reason) for c in cut]))
    row.check("drained calls kept audio", row.silence_ms is not None
              and row.silence_ms < UNDISTURBED_GAP_MS, f"frame gap {row.silence_ms} ms")
    row.check("new calls on the other gateway", set(after.values()) == {"gateway-2"},
              str(after))
    row.check("drained gateway exited 0", exit_code == 0, f"exit code {exit_code}")


async def _is(stack: FaultStack, backend: str, server: str, prefix: str) -> bool:
    return (await lb_status(stack, backend, server)).startswith(prefix)


async def sigkill(ctx: Ctx, row: Row) -> None:
    await _lost(ctx, row, signal.SIGKILL)


async def sigstop(ctx: Ctx, row: Row) -> None:
    """A frozen host (SIGSTOP): sockets stay open, no FIN, no RST, no heartbeat — only the
    missing heartbeat can reveal it."""
    await _lost(ctx, row, signal.SIGSTOP)


async def _lost(ctx: Ctx, row: Row, sig: int) -> None:
    n, m = ctx.size(4, 10), ctx.size(2, 4)
    hangup = ctx.sizef(16, 24)
    opts = FaultOptions(replicas={"ingress": 1, "orchestrator": 1, "gateway": 2},
                        load_balancer=True)
    async with ctx.stack(f"gateway-{signal.Signals(sig).name.lower()}", opts) as stack:
        sim, client = stack.infobip, stack.redis_client
        assert sim is not None
        calls, where = await _spread_calls(ctx, row, stack, n, hangup)
        killed = [c for c in calls if where[c.call_id] == "gateway-1"]
        others = [c for c in calls if where[c.call_id] != "gateway-1"]
        ctx.phase(f"{signal.Signals(sig).name} gateway-1, wait for gateway_lost")
        t_kill = time.time()
        stack.process("gateway-1").send_signal(sig)
        row.faults = 1

        async def all_marked() -> bool:
            reasons = [decode(await client.hget(redis_keys.session_record(c.call_id),
                                                "end_reason") or b"") for c in killed]
            return all(r == "gateway_lost" for r in reasons)
        marked = await wait_async(all_marked, LOST_BOUND_S, 0.2)
        t_marked = time.time()
        ctx.phase("wait for the lost calls to be freed")
        unfreed = await finish_all(killed, LOST_BOUND_S + 15)
        ctx.phase("wait for the LB to mark gateway-1 DOWN")
        down = await wait_async(lambda: _is(stack, "gateway", "gateway-1", "DOWN"), 10, 0.2)
        row.check("LB marked the lost gateway down", down, "not DOWN in 10 s")
        ctx.phase(f"place {m} new calls, wait for every call to end")
        second = await place_calls(sim, m, _short, rate=4)
        unfinished = await finish_all(others + second, hangup + 30)
        row.notes += [f"not ended: {u}" for u in unfreed + unfinished]
        after = {c.call_id: await _gateway_of(stack, c.call_id) for c in second}
        reasons = {c.call_id: decode(await client.hget(redis_keys.session_record(c.call_id),
                                                       "end_reason") or b"") for c in killed}
        stack.process("gateway-1").send_signal(signal.SIGKILL)  # a frozen one too
    row.calls = n + m
    row.lost, row.duplicated = None, None
    freed = [c.timeline.get("hangup", float("inf")) - t_kill for c in killed]
    ended_by_api = [c for c in killed if c.end_reason == "api_hangup"
                    or len(c.dialogs) > 1]  # hung up, or transferred (a PHONE dialog)
    row.silence_ms = round(max(freed, default=0.0) * 1000.0, 0) if killed else None
    row.recovery_s = round(max(freed), 2) if killed else None
    bystander_gap = max((max_frame_gap(c.leg) for c in others if c.leg), default=0.0)
    cut = [c for c in others + second if c.end_reason != "caller_hangup"]
    row.cut = len(cut) + len(unfinished)
    row.notes.append(f"calls per gateway {sorted(where.values())}; marked gateway_lost after "
                     f"{t_marked - t_kill:.1f} s; reasons {sorted(reasons.values())}; "
                     f"bystanders' longest frame gap {bystander_gap} ms")
    row.check("some calls were on the crashed gateway", bool(killed) and bool(others),
              str(where))
    row.check("sessions marked gateway_lost", marked, str(reasons))
    row.check(f"callers freed by the API within {LOST_BOUND_S:.0f} s",
              len(ended_by_api) == len(killed) and all(f <= LOST_BOUND_S for f in freed),
              f"freed after {[round(f, 1) for f in freed]} s, end reasons "
              f"{[c.end_reason for c in killed]}")
    row.check("others undisturbed", row.cut == 0 and bystander_gap < UNDISTURBED_GAP_MS,
              f"cut {[(c.call_id[:8], c.end_reason) for c in cut]}, gap {bystander_gap} ms")
    row.check("new calls on the surviving gateway", set(after.values()) == {"gateway-2"},
              str(after))


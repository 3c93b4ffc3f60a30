"""Scenarios 5 and 6: a media gateway drained with SIGTERM, and one lost (SIGKILL, SIGSTOP).

Invariant (5): no live call is cut within the drain window (each ends by its caller hanging
up, with no dead line: frame gap < 300 ms), new calls land on the other gateway through the
load balancer, and the drained gateway exits 0 once its last call ended.
Invariant (6a SIGKILL, 6b SIGSTOP): a lost gateway is a pause, not a hang-up. Every caller of
the lost gateway is re-bridged (services/call_orchestrator/rebridge.py) and back in
conversation - the agent's audio reaches them on a new media leg - within REBRIDGE_BOUND_S
of the fault (goal REBRIDGE_GOAL_S); no call is ended by it; each new model session received
the conversation so far before it was asked to respond; no call ever had two live media legs
(each media leg ended before the next was created); the bystanders on the surviving gateway
are undisturbed. 6b then resumes the frozen gateway (SIGCONT): it must send nothing more.
"""

from __future__ import annotations

import csv
import io
import itertools
import signal
import time

import aiohttp

from bench.faults.drive import finish_all, place_calls, script, wait_async, wait_for
from bench.faults.metrics_scrape import gateway_metrics
from bench.faults.report import Row
from bench.faults.runner import Ctx
from bench.faults.s_model import reseeded as _reseeded
from bench.faults.silence import max_frame_gap
from bench.faults.stack import FaultOptions, FaultStack, decode
from callbridge.shared import redis_keys
from callbridge.simulators.infobip import CallScript, SimCall

UNDISTURBED_GAP_MS = 300.0
#: From the fault to the agent's voice on the new media leg (the issue's bound and goal).
REBRIDGE_BOUND_S = 3.0
REBRIDGE_GOAL_S = 2.0


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
                        load_balancer=True, env={"GATEWAY_DRAIN_TIMEOUT_S": "60"})
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
    name = signal.Signals(sig).name
    async with ctx.stack(f"gateway-{name.lower()}", opts) as stack:
        sim, rt, client = stack.infobip, stack.openai, stack.redis_client
        assert sim is not None and rt is not None
        calls, where = await _spread_calls(ctx, row, stack, n, hangup)
        killed = [c for c in calls if where[c.call_id] == "gateway-1"]
        others = [c for c in calls if where[c.call_id] != "gateway-1"]
        ctx.phase("wait until each call has a conversation to lose (greeting + the caller)")

        async def conversing() -> bool:
            lengths = [await client.xlen(redis_keys.transcript_stream(c.call_id))
                       for c in killed]
            return all(n >= 2 for n in lengths)
        row.check("each call had a conversation before the fault",
                  await wait_async(conversing, 30, 0.2), "fewer than 2 transcript lines")
        ctx.phase(f"{name} gateway-1, wait until its callers hear the agent again")
        t_kill = time.time()
        stack.process("gateway-1").send_signal(sig)
        row.faults = 1
        back_at: dict[str, float] = {}

        async def all_back() -> bool:
            for c in killed:
                if c.call_id not in back_at:
                    rec = await client.hmget(redis_keys.session_record(c.call_id),
                                             "gateway_id", "first_audio_at", "media_gen")
                    gateway, first_audio, generation = (decode(v or b"") for v in rec)
                    if gateway and gateway != "gateway-1" and generation not in ("", "0") \
                            and first_audio:
                        back_at[c.call_id] = int(first_audio) / 1000.0
            return len(back_at) == len(killed)
        back = await wait_async(all_back, REBRIDGE_BOUND_S + 10, 0.1)
        sent_after_resume = None
        if sig == signal.SIGSTOP:
            ctx.phase("SIGCONT gateway-1: it must not send its old callers a frame")
            t_cont = time.time()
            stack.process("gateway-1").send_signal(signal.SIGCONT)
            port = stack.port_of("gateway-1")

            async def fenced() -> bool:
                metrics = await gateway_metrics(port)
                return metrics.get(("callbridge_gateway_fenced_sessions_total", ()), 0) \
                    >= len(killed)
            row.check("the resumed gateway fenced its old calls",
                      await wait_async(fenced, 10, 0.2), "fenced counter below the calls lost")
            metrics = await gateway_metrics(port)
            last = metrics.get(("callbridge_gateway_last_frame_sent_seconds", ()), 0.0)
            sent_after_resume = last >= t_cont
        ctx.phase(f"place {m} new calls, wait for every call to end")
        second = await place_calls(sim, m, _short, rate=4)
        unfinished = await finish_all(calls + second, hangup + 30)
        row.notes += [f"not ended: {u}" for u in unfinished]
        after = {c.call_id: await _gateway_of(stack, c.call_id) for c in second}
        fresh = [s for s in rt.sessions if s.connected_at >= t_kill]
        resumed = [s for s in fresh if _reseeded(s)]
        stack.process("gateway-1").send_signal(signal.SIGKILL)
    row.calls = n + m
    row.lost, row.duplicated = None, None
    holds = [back_at[c.call_id] - t_kill for c in killed if c.call_id in back_at]
    row.silence_ms = round(max(holds, default=0.0) * 1000.0) if killed else None
    row.recovery_s = round(max(holds), 2) if holds else None
    bystander_gap = max((max_frame_gap(c.leg) for c in others if c.leg), default=0.0)
    cut = [c for c in calls + second if c.end_reason != "caller_hangup"]
    row.cut = len(cut) + len(unfinished)
    overlapping = [c.call_id[:8] for c in killed if _media_legs_overlap(c)]
    row.notes.append(
        f"calls per gateway {sorted(where.values())}; back in conversation after "
        f"{sorted(round(h, 2) for h in holds)} s (goal {REBRIDGE_GOAL_S} s); "
        f"{len(resumed)} of {len(fresh)} new model sessions re-seeded; bystanders' longest "
        f"frame gap "
        f"{bystander_gap} ms")
    row.check("some calls were on the lost gateway", bool(killed) and bool(others), str(where))
    row.check(f"every lost caller heard the agent again within {REBRIDGE_BOUND_S:.0f} s",
              back and len(holds) == len(killed) and max(holds) <= REBRIDGE_BOUND_S,
              f"{len(holds)} of {len(killed)} back, after {[round(h, 2) for h in holds]} s")
    row.check("no call ended by the fault", row.cut == 0,
              str([(c.call_id[:8], c.end_reason) for c in cut]))
    row.check("each new model session got the conversation so far",
              len(resumed) >= len(killed), f"{len(resumed)} re-seeded of {len(killed)}")
    row.check("never two live media legs for a call", not overlapping, str(overlapping))
    row.check("bystanders undisturbed", bystander_gap < UNDISTURBED_GAP_MS,
              f"gap {bystander_gap} ms")
    if sig == signal.SIGKILL:
        row.check("new calls on the surviving gateway", set(after.values()) == {"gateway-2"},
                  str(after))
    else:
        row.check("the resumed gateway sent nothing after SIGCONT", sent_after_resume is False,
                  "frames were written after the gateway was resumed")


def _media_legs_overlap(call: SimCall) -> bool:
    """True when a media (WEBSOCKET) leg of the call was created before the previous one
    had ended: two live media legs at once."""
    media = [d for d in call.dialogs if d.child.endpoint.get("type") == "WEBSOCKET"]
    for before, after in itertools.pairwise(media):
        if before.child.end_time is None or before.child.end_time > after.start_time:
            return True
    return False

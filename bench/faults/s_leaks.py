"""Scenario 9: leaks — many short calls in sequence through one gateway.

Invariants: the gateway's RSS (VmRSS, /proc/<pid>/status) after the run is within 10 % of
its warm baseline (measured after warm-up waves at the same concurrency, so the baseline
already holds the working set of that many live calls); its open sockets return to the
baseline (+2); no model socket stays open at the simulator; and every per-call Redis key
(call record, session, transcript, claims, tokens, arq job/result keys) has a TTL or is gone,
so the key count returns to its baseline once those TTLs expire.
"""

from __future__ import annotations

import asyncio
import time

from bench.faults.drive import wait_async, wait_for
from bench.faults.report import Row
from bench.faults.runner import Ctx
from bench.faults.stack import FaultOptions, FaultStack, decode, rss_kb, socket_count
from callbridge.shared import redis_keys
from callbridge.simulators.infobip import CallScript, SimCall

PER_CALL = (":call:", ":session:", ":transcript:", ":dialog-claim:", ":media-token:",
            ":transfer-claim:", "arq:job:", "arq:result:", "arq:retry:", "arq:in-progress:")


async def _calls(stack: FaultStack, n: int, concurrency: int, max_s: float) -> list[SimCall]:
    """`n` short calls, at most `concurrency` live at once (a sliding window)."""
    sim = stack.infobip
    assert sim is not None
    sem = asyncio.Semaphore(concurrency)
    deadline = time.monotonic() + max_s
    calls: list[SimCall] = []

    async def one() -> None:
        async with sem:
            if time.monotonic() > deadline:
                return
            call = await sim.place_call(CallScript(caller_wav=None, hangup_after_s=2.0,
                                                   max_duration_s=10))
            calls.append(call)
            try:
                await call.wait_finished(30)
            except TimeoutError:
                pass
    await asyncio.gather(*(one() for _ in range(n)))
    return calls


async def _idle(stack: FaultStack) -> bool:
    client = stack.redis_client
    assert stack.openai is not None
    return (not await client.scard(redis_keys.gateway_sessions("gateway-1"))
            and not stack.openai.open_sessions)


async def _ttl_less(stack: FaultStack, limit: int = 500_000) -> tuple[int, int, list[str]]:
    """(keys seen, per-call keys, per-call keys without a TTL — first few names)."""
    client = stack.redis_client
    seen = per_call = 0
    missing: list[str] = []
    async for raw in client.scan_iter(count=1000):
        seen += 1
        if seen > limit:
            break
        key = decode(raw)
        if not any(p in key for p in PER_CALL):
            continue
        per_call += 1
        if await client.ttl(raw) == -1:
            missing.append(key)
    return seen, per_call, missing


async def leaks(ctx: Ctx, row: Row) -> None:
    n = ctx.size(50, 1000)
    conc = ctx.size(10, 20)
    opts = FaultOptions(keep_sessions=50)
    async with ctx.stack("leaks", opts) as stack:
        pid = stack.pid_of("gateway-1")
        warm = await _calls(stack, 2 * conc, conc, 60)
        await wait_async(lambda: _idle(stack), 15)
        base_rss, base_sock = rss_kb(pid), socket_count(pid)
        t0 = time.time()
        calls = await _calls(stack, n, conc, ctx.sizef(60, 330))
        row.recovery_s = None
        idle = await wait_async(lambda: _idle(stack), 20)
        # Let the allocator return what the last wave freed (bounded, then measure).
        await wait_for(lambda: rss_kb(pid) <= base_rss * 1.10, 5)
        rss, sock = rss_kb(pid), socket_count(pid)
        keys, per_call, missing = await _ttl_less(stack)
        sim = stack.infobip
        assert sim is not None
    row.calls = len(calls)
    row.events = sum(len(c.events_posted) for c in calls)
    row.lost, row.duplicated = None, None
    row.cut = sum(1 for c in calls if c.end_reason != "caller_hangup")
    growth = (rss - base_rss) / base_rss * 100 if base_rss else 0.0
    row.notes.append(f"{len(warm)} warm-up calls; RSS {base_rss} -> {rss} kB ({growth:+.1f} %); "
                     f"sockets {base_sock} -> {sock}; {keys} keys, {per_call} per-call, "
                     f"{len(missing)} without TTL; {time.time() - t0:.0f} s of calls")
    row.check("all calls placed", len(calls) == n, f"{len(calls)} of {n} in the time bound")
    row.check("calls ended normally", row.cut == 0,
              str(sorted({str(c.end_reason) for c in calls})))
    row.check("gateway idle afterwards (no session, no model socket)", idle, "")
    row.check("RSS within 10 % of warm baseline", rss <= base_rss * 1.10,
              f"{base_rss} -> {rss} kB")
    row.check("sockets back to baseline", 0 <= sock <= base_sock + 2, f"{base_sock} -> {sock}")
    row.check("every per-call key has a TTL", not missing, str(missing[:5]))

"""Scenarios 1 and 8: Redis SIGKILLed under webhook load (AOF restart), Redis at maxmemory.

Invariant (1): every webhook answered 200 is in the events stream after Redis came back from
its AOF, and while Redis is down the ingress answers 503 (never 200). With `appendfsync
always` the AOF is fsynced before the reply; with `everysec` the write(2) still happens before
the reply (Redis flushes the AOF buffer before answering clients), so a *process* kill loses
nothing either: only an OS crash or power loss can lose the last second (README).
Invariant (8): at maxmemory (noeviction) the ingress answers 503 and nothing it acknowledged
is missing; live calls keep their audio (no dead line) and are not cut.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from bench.faults.drive import (
    WebhookDriver,
    finish_all,
    place_calls,
    script,
    stream_ids,
    wait_for,
)
from bench.faults.report import Row
from bench.faults.runner import Ctx
from bench.faults.silence import max_frame_gap
from bench.faults.stack import FaultOptions, decode
from callbridge.shared import redis_keys


async def kill_always(ctx: Ctx, row: Row) -> None:
    await _kill(ctx, row, "always")


async def kill_everysec(ctx: Ctx, row: Row) -> None:
    await _kill(ctx, row, "everysec")


async def _kill(ctx: Ctx, row: Row, fsync: str) -> None:
    rate = ctx.sizef(120, 300)
    duration = ctx.sizef(9, 24)
    outage = ctx.sizef(2.0, 5.0)
    kills = ctx.size(1, 2)
    opts = FaultOptions(replicas={"ingress": 2, "orchestrator": 1, "gateway": 1},
                        load_balancer=True, appendfsync=fsync)
    async with ctx.stack(f"redis-kill-{fsync}", opts) as stack:
        assert stack.redis is not None
        redis = stack.redis
        driver = WebhookDriver(stack.webhook_url, rate=rate)
        load = asyncio.create_task(driver.run(limit=int(rate * duration * 1.5),
                                              max_s=duration))
        windows: list[tuple[float, float]] = []
        for k in range(kills):
            # The outage is the injected fault's length, placed evenly in the load.
            await asyncio.sleep(duration / (kills + 1) - (outage if k else 0))
            t_kill = time.time()
            await asyncio.to_thread(redis.kill)
            await asyncio.sleep(outage)
            await asyncio.to_thread(redis.start)  # same port, same data dir: AOF replay
            windows.append((t_kill, time.time()))
            row.faults += 1
        await load
        stored = await stream_ids(stack.redis_client)
    counts = Counter(stored)
    acked = driver.acked
    row.events = len(driver.records)
    row.lost = sum(1 for r in acked if counts[r.key] == 0)
    row.duplicated = sum(1 for r in acked if counts[r.key] > 1)
    row.cut = None
    during = [r for r in driver.records for a, b in windows if r.sent_at > a and r.done_at < b]
    bad = Counter(r.status for r in during if r.status != 503)
    recov = []
    for _, up in windows:
        after = [r.done_at for r in acked if r.sent_at >= up]
        if after:
            recov.append(min(after) - up)
    row.recovery_s = round(max(recov), 2) if recov else None
    row.notes.append(f"statuses {driver.statuses()}; during outage {len(during)} answered, "
                     f"{sum(1 for r in during if r.status == 503)} with 503")
    row.check("0 lost" if fsync == "always" else "lost counted", row.lost == 0
              or fsync != "always", f"{row.lost} acknowledged webhooks missing")
    if fsync != "always" and row.lost:
        row.notes.append(f"everysec lost {row.lost} acknowledged webhooks")
    row.check("outage answered 503, never 200", not bad.get(200) and bool(during),
              f"non-503 answers during the outage: {dict(bad)}")
    row.check("no 500", "500" not in driver.statuses(), str(driver.statuses()))
    row.check("recovered", bool(recov) and len(recov) == len(windows),
              "no 200 after Redis came back")


async def maxmemory(ctx: Ctx, row: Row) -> None:
    n_calls = ctx.size(3, 6)
    oom_s = ctx.sizef(7.0, 12.0)
    hangup = oom_s + 12.0
    opts = FaultOptions(replicas={"ingress": 1, "orchestrator": 1, "gateway": 1})
    async with ctx.stack("redis-maxmemory", opts) as stack:
        sim, client = stack.infobip, stack.redis_client
        assert sim is not None
        calls = await place_calls(sim, n_calls, lambda: script(hangup_after_s=hangup))
        if not await wait_for(lambda: all("first_agent_audio" in c.timeline for c in calls), 20):
            row.check("calls live before the fault", False, "agent audio not heard")
        driver = WebhookDriver(stack.webhook_url, rate=ctx.sizef(40, 80))
        load = asyncio.create_task(driver.run(limit=100_000, max_s=oom_s + 4))
        await asyncio.sleep(1.0)  # steady load before the fault
        info = await client.info("memory")
        await client.config_set("maxmemory-policy", "noeviction")
        t_oom = time.time()
        await client.config_set("maxmemory", str(int(info["used_memory"])))
        row.faults = 1
        await asyncio.sleep(oom_s)  # the fault's length
        await client.config_set("maxmemory", "0")
        t_free = time.time()
        await load
        unfinished = await finish_all(calls, hangup + 30)
        stored = await stream_ids(client)
        ended = {c.call_id: decode(await client.hget(redis_keys.session_record(c.call_id),
                                                     "end_reason") or b"") for c in calls}
    counts = Counter(stored)
    acked = driver.acked
    row.calls, row.events = n_calls, len(driver.records)
    row.lost = sum(1 for r in acked if counts[r.key] == 0)
    row.duplicated = sum(1 for r in acked if counts[r.key] > 1)
    cut = [c for c in calls if c.end_reason != "caller_hangup"]
    row.cut = len(cut) + len(unfinished)
    row.silence_ms = max((max_frame_gap(c.leg, t_oom, t_free + 2) for c in calls if c.leg),
                         default=None)
    during = [r for r in driver.records if r.sent_at > t_oom + 0.2 and r.done_at < t_free]
    after = [r.done_at - t_free for r in acked if r.sent_at >= t_free]
    row.recovery_s = round(min(after), 2) if after else None
    row.notes.append(f"statuses {driver.statuses()}; during maxmemory "
                     f"{Counter(r.status for r in during)}; session end reasons "
                     f"{Counter(ended.values())}")
    row.check("ingress answered 503", any(r.status == 503 for r in during),
              f"no 503 while at maxmemory: {Counter(r.status for r in during)}")
    row.check("0 lost", row.lost == 0, f"{row.lost} acknowledged webhooks missing")
    row.check("no 500", "500" not in driver.statuses(), str(driver.statuses()))
    row.check("live calls not cut", row.cut == 0,
              f"{[(c.call_id[:8], c.end_reason) for c in cut]} unfinished {len(unfinished)}; "
              f"session end reasons {ended}")
    row.check("live calls kept audio (frame gap < 300 ms)",
              row.silence_ms is not None and row.silence_ms < 300,
              f"longest frame gap {row.silence_ms} ms")
    row.check("recovered", bool(after), "no 200 after maxmemory was lifted")


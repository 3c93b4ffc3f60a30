"""Webhook received -> dialog request at the Calls API, at a steady rate of new calls.

Setup (all on 127.0.0.1): a private redis-server; ONE orchestrator process
(`python -m callbridge.services.call_orchestrator orchestrator`, exactly what production runs); in
this process the Infobip simulator (calls connect their WEBSOCKET leg without a gateway and hang up
after `--call-s`) and a minimal stand-in for the webhook ingress that XADDs each webhook to the
events stream with `received_at`, as the ingress does. Every follow-up event (CALL_ESTABLISHED,
DIALOG_*, CALL_FINISHED) flows through the orchestrator too.

Latency per call = (simulator's arrival time of POST /calls/1/dialogs) - (the instant the
webhook's body was read). Both clocks are this machine's wall clock.

The anchor (`--paths ours,tutorial`, the default): the tutorial's in-process path
(bench/orchestrator/tutorial.py: the webhook handler POSTs the dialog itself, Python aiohttp
on uvloop like the orchestrator) against a fresh simulator in the same run, measured from
the same instant, and the run prints both paths' p50/p99 and the ratios ours/tutorial -
because our machines differ by up to 3x from day to day and only ratios taken in one run
compare. With `--repeat N` the paths alternate which goes first and the run prints medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from callbridge.shared import redis_keys
from callbridge.shared.infobip_events import CallsEvent
from callbridge.shared.redis_server import RedisServer, free_port
from callbridge.simulators.infobip import CallScript, InfobipSimulator, SimCall

ROOT = Path(__file__).resolve().parents[2]
PATHS = ("ours", "tutorial")
#: Targets at 50 new calls/s: webhook -> dialog request, ours.
TARGET_P50_MS, TARGET_P99_MS = 2.5, 10.0


class Ingress:
    """POST /webhook -> XADD (body, type, call_id, received_at) -> 200."""

    def __init__(self, redis_url: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        #: Unix seconds, full precision: the stored field is whole ms as the ingress writes
        #: it, but measuring from it would add 0-1 ms of truncation to every latency.
        self.received_at: dict[str, float] = {}
        #: When the XADD of each CALL_RECEIVED came back: splits our latency into the
        #: ingress's share (validate + store) and the orchestrator's (stream -> POST).
        self.stored_at: dict[str, float] = {}
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        event = CallsEvent.model_validate_json(body)
        call_id = event.subject_call_id() or ""
        await self.redis.xadd(redis_keys.EVENTS_STREAM, {
            "body": body, "type": event.type, "call_id": call_id,
            "received_at": str(int(now * 1000))})
        if event.type == "CALL_RECEIVED":
            self.received_at.setdefault(call_id, now)
            self.stored_at.setdefault(call_id, time.time())
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self.webhook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/webhook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        await self.redis.aclose()


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def scrape_dialog_latency(port: int) -> dict[str, float]:
    """The orchestrator's own histogram (received_at -> just before its POST): separates
    the orchestrator's share from this process's (simulator + ingress) event-loop delays."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    if os.environ.get("BENCH_METRICS_DUMP"):
        Path(os.environ["BENCH_METRICS_DUMP"]).write_text(text)
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith("callbridge_orchestrator_webhook_to_dialog_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le),
                            float(line.rsplit(" ", 1)[1])))
    queued = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith('callbridge_orchestrator_local_starts_total{result="queued"}'))
    total = buckets[-1][1] if buckets else 0.0
    share: dict[str, float] = {"jobs left to the queue poll": queued}
    for bound, count in buckets:
        if bound != float("inf"):
            share[f"<= {bound * 1000:g} ms"] = round(count / total, 3) if total else 0.0
    return share


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def wait_consumer(redis_url: str, timeout: float = 20.0) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if await client.xinfo_consumers(redis_keys.EVENTS_STREAM,
                                                redis_keys.EVENTS_GROUP):
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError("the orchestrator did not join the consumer group")
    finally:
        await client.aclose()


async def drive(sim: InfobipSimulator, args: argparse.Namespace) -> list[SimCall]:
    """Place calls at a steady rate; return once every call has a dialog (or after 30 s)."""
    n = int(args.rate * args.seconds)
    start = time.monotonic()
    calls = []
    for i in range(n):
        delay = start + i / args.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        calls.append(await sim.place_call(CallScript(
            caller_wav=None, connect_to_media=False, hangup_after_s=args.call_s)))
    # The simulator exposes no "dialog created" event: poll its state, bounded (30 s).
    for _ in range(300):
        if all(c.dialog is not None for c in calls):
            break
        await asyncio.sleep(0.1)
    return calls


def measure(sim: InfobipSimulator, calls: list[SimCall],
            received_at: dict[str, float]) -> dict[str, Any]:
    """Latency per call (first dialog POST's arrival - webhook read) and POST counts."""
    posts: dict[str, int] = {}
    first_post: dict[str, float] = {}
    for req in sim.dialog_requests:
        parent = str((req.json or {}).get("parentCallId"))
        posts[parent] = posts.get(parent, 0) + 1
        first_post.setdefault(parent, req.at)
    latencies = [(first_post[c.call_id] - received_at[c.call_id]) * 1000 for c in calls
                 if c.call_id in received_at and c.call_id in first_post]
    return {
        "calls": len(calls), "bridged": sum(1 for c in calls if c.dialog_id),
        "dialog_posts": len(sim.dialog_requests),
        "calls_with_more_than_one_post": sum(1 for v in posts.values() if v > 1),
        "load_average_1m": os.getloadavg()[0],
        "latency_ms": {"p50": pct(latencies, 50), "p90": pct(latencies, 90),
                       "p99": pct(latencies, 99), "max": max(latencies or [float("nan")])},
    }


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()  # SIGTERM: the orchestrator drains and exits
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Our path: ingress stand-in -> Redis stream -> one orchestrator process -> POST."""
    with RedisServer() as redis_server:
        ingress = Ingress(redis_server.url)
        await ingress.start()
        sim = InfobipSimulator(webhook_url=ingress.url, webhook_timeout_s=10.0)
        await sim.start()
        cfg = sim.add_media_stream_config(url="ws://127.0.0.1:9/media", sample_rate=24000)
        metrics_port = free_port()
        env = {**os.environ, "REDIS_URL": redis_server.url, "INFOBIP_BASE_URL": sim.base_url,
               "INFOBIP_API_KEY": sim.api_key, "INFOBIP_MEDIA_STREAM_CONFIG_ID": cfg,
               "ORCHESTRATOR_METRICS_PORT": str(metrics_port), "LOG_LEVEL": "WARNING",
               "ORCHESTRATOR_LOCAL_START": "false" if args.no_local_start else "true"}
        prof = ["-m", "cProfile", "-o", args.profile] if args.profile else []
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *prof, "-m", "callbridge.services.call_orchestrator", "orchestrator",
            cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        try:
            await wait_consumer(redis_server.url)
            cpu_before = cpu_seconds(proc.pid)
            self_before = cpu_seconds(os.getpid())
            start = time.monotonic()
            calls = await drive(sim, args)
            result = measure(sim, calls, ingress.received_at)
            result["stored_to_post_ms"] = measure(sim, calls, ingress.stored_at)["latency_ms"]
            stored = [(ingress.stored_at[c] - ingress.received_at[c]) * 1000
                      for c in ingress.stored_at if c in ingress.received_at]
            result["read_to_stored_ms"] = {"p50": pct(stored, 50), "p99": pct(stored, 99)}
            inside = await scrape_dialog_latency(metrics_port)
            cpu_s = cpu_seconds(proc.pid) - cpu_before
            self_cpu_s = cpu_seconds(os.getpid()) - self_before
            wall_s = time.monotonic() - start
            await asyncio.gather(*(c.wait_finished(60) for c in calls),
                                 return_exceptions=True)
        finally:
            await _stop(proc)
            await sim.stop()
            await ingress.stop()
    return {
        "path": "ours", "rate_per_s": args.rate, "seconds": args.seconds,
        "local_start": not args.no_local_start, **result,
        "orchestrator_view": inside,
        "orchestrator_cpu_pct_of_one_core": round(100 * cpu_s / wall_s, 1),
        "driver_cpu_pct_of_one_core": round(100 * self_cpu_s / wall_s, 1),
    }


async def bench_tutorial(args: argparse.Namespace) -> dict[str, Any]:
    """The anchor: the simulator's webhooks go straight to the tutorial's handler, which
    POSTs the dialog itself (bench/orchestrator/tutorial.py, its own process like ours)."""
    import aiohttp

    port = free_port()
    sim = InfobipSimulator(webhook_url=f"http://127.0.0.1:{port}/webhook",
                           webhook_timeout_s=10.0)
    await sim.start()
    cfg = sim.add_media_stream_config(url="ws://127.0.0.1:9/media", sample_rate=24000)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.orchestrator.tutorial", "--port", str(port),
        "--api-base", sim.base_url, "--api-key", sim.api_key, "--config-id", cfg,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        ready = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not ready.startswith(b"READY"):
            raise RuntimeError(f"the tutorial anchor did not start (exit {proc.returncode})")
        cpu_before = cpu_seconds(proc.pid)
        self_before = cpu_seconds(os.getpid())
        start = time.monotonic()
        calls = await drive(sim, args)
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{port}/received") as resp:
            stamps = await resp.json()
        result = measure(sim, calls, {k: float(v) for k, v in stamps["received"].items()})
        cpu_s = cpu_seconds(proc.pid) - cpu_before
        self_cpu_s = cpu_seconds(os.getpid()) - self_before
        wall_s = time.monotonic() - start
        await asyncio.gather(*(c.wait_finished(60) for c in calls), return_exceptions=True)
    finally:
        await _stop(proc)
        await sim.stop()
    return {
        "path": "tutorial", "rate_per_s": args.rate, "seconds": args.seconds, **result,
        "failed_posts": int(stamps.get("failed", 0)),
        "orchestrator_cpu_pct_of_one_core": round(100 * cpu_s / wall_s, 1),
        "driver_cpu_pct_of_one_core": round(100 * self_cpu_s / wall_s, 1),
    }


async def bench_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every repeat runs each path once; successive repeats alternate which goes first, so
    neither always gets the fresher machine."""
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeat):
        order = args.paths if repeat % 2 == 0 else list(reversed(args.paths))
        for path in order:
            result = await (bench(args) if path == "ours" else bench_tutorial(args))
            result["repeat"] = repeat
            runs.append(result)
            if not args.json:
                lat = result["latency_ms"]
                print(f"  run {repeat + 1}/{args.repeat} {path}: p50 {lat['p50']:.2f} ms, "
                      f"p99 {lat['p99']:.2f} ms", file=sys.stderr, flush=True)
    medians: dict[str, dict[str, float]] = {}
    for path in args.paths:
        mine = [r for r in runs if r["path"] == path]
        medians[path] = {q: statistics.median(r["latency_ms"][q] for r in mine)
                         for q in ("p50", "p90", "p99", "max")}
    ratios: dict[str, float] = {}
    if set(PATHS) <= set(args.paths):
        for q in ("p50", "p99"):
            per_repeat = [
                ours["latency_ms"][q] / tut["latency_ms"][q]
                for ours in runs if ours["path"] == "ours"
                for tut in runs if tut["path"] == "tutorial"
                and tut["repeat"] == ours["repeat"] and tut["latency_ms"][q] > 0]
            ratios[q] = statistics.median(per_repeat) if per_repeat else float("nan")
    return {"rate_per_s": args.rate, "seconds": args.seconds, "repeat": args.repeat,
            "runs": runs, "median_latency_ms": medians, "ratio_ours_to_tutorial": ratios}


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    runs = report["runs"]
    n = runs[0]["calls"] if runs else 0
    print(f"orchestrator benchmark: {n} calls at {args.rate:g}/s for {args.seconds:g} s per "
          f"run, {args.repeat} run(s) of each path, one orchestrator process, local start "
          f"{'off' if args.no_local_start else 'on'}")
    print("ours: ingress stand-in -> Redis stream -> orchestrator -> POST; tutorial: the "
          "webhook handler POSTs the dialog itself (bench/orchestrator/tutorial.py, aiohttp)")
    head = ("path", "run", "calls", "bridged", ">1 POST", "p50 ms", "p90 ms", "p99 ms",
            "max ms", "process CPU %", "driver CPU %", "load avg")
    rows = [head] + [(
        r["path"], str(r["repeat"] + 1), str(r["calls"]), str(r["bridged"]),
        str(r["calls_with_more_than_one_post"]),
        *(f"{r['latency_ms'][q]:.2f}" for q in ("p50", "p90", "p99", "max")),
        f"{r['orchestrator_cpu_pct_of_one_core']:.0f}", f"{r['driver_cpu_pct_of_one_core']:.0f}",
        f"{r['load_average_1m']:.2f}") for r in sorted(runs, key=lambda r: (r["path"],
                                                                             r["repeat"]))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    print()
    for i, row in enumerate(rows):
        print("  ".join(cell.rjust(w) if i and j else cell.ljust(w)
                        for j, (cell, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for path, med in report["median_latency_ms"].items():
        print(f"webhook received -> dialog request, {path} (ms, median of {args.repeat}): "
              f"p50 {med['p50']:.2f}  p90 {med['p90']:.2f}  p99 {med['p99']:.2f}  "
              f"max {med['max']:.2f}")
    ratios = report["ratio_ours_to_tutorial"]
    if ratios:
        print(f"ratio ours / tutorial (median of each run's ratio): p50 {ratios['p50']:.2f}x  "
              f"p99 {ratios['p99']:.2f}x")
    ours = report["median_latency_ms"].get("ours")
    if ours is not None:
        p50_ok, p99_ok = ours["p50"] <= TARGET_P50_MS, ours["p99"] <= TARGET_P99_MS
        print(f"target ours p50 <= {TARGET_P50_MS:g} ms at 50 calls/s: {ours['p50']:.2f} ms -> "
              f"{'MET' if p50_ok else 'MISSED'}; p99 <= {TARGET_P99_MS:g} ms: "
              f"{ours['p99']:.2f} ms -> {'MET' if p99_ok else 'MISSED'}")
    for r in runs:
        if r["path"] != "ours":
            continue
        split, rest = r["read_to_stored_ms"], r["stored_to_post_ms"]
        print(f"ours, run {r['repeat'] + 1}: where the time goes: webhook read -> XADD "
              f"acknowledged p50 {split['p50']:.2f} / p99 {split['p99']:.2f} ms (the ingress's "
              f"share); XADD acknowledged -> POST at the API p50 {rest['p50']:.2f} / p99 "
              f"{rest['p99']:.2f} ms (stream read, job claim, reads, POST)")
        view = r["orchestrator_view"]
        print(f"ours, run {r['repeat'] + 1}: orchestrator's own view (received_at -> its POST), "
              "share of calls: " + ", ".join(
                  f"{k}: {v:.0%}" for k, v in view.items()
                  if k in ("<= 1 ms", "<= 2.5 ms", "<= 5 ms", "<= 10 ms", "<= 25 ms",
                           "<= 50 ms", "<= 100 ms"))
              + f"; jobs left to the 0.5 s queue poll: {view['jobs left to the queue poll']:.0f}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.orchestrator",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="new calls per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to drive calls")
    parser.add_argument("--call-s", type=float, default=3.0, help="each call's duration")
    parser.add_argument("--quick", action="store_true", help="5 s (CI)")
    parser.add_argument("--paths", default=",".join(PATHS),
                        help="comma-separated: ours (ingress stand-in, Redis, orchestrator) "
                             "and/or tutorial (the anchor: the webhook handler POSTs the "
                             "dialog itself); default both")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each path, alternating which goes first; medians")
    parser.add_argument("--no-local-start", action="store_true",
                        help="disable the fast path: arq's 0.5 s queue poll only")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the orchestrator to FILE")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 5.0
    args.paths = list(dict.fromkeys(p.strip() for p in args.paths.split(",") if p.strip()))
    if not args.paths or any(p not in PATHS for p in args.paths):
        parser.error(f"--paths takes {', '.join(PATHS)}")
    args.repeat = max(1, min(args.repeat, 20))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    report = asyncio.run(bench_all(args))
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report, args)
    return 0

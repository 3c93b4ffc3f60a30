"""Webhook received -> dialog request at the Calls API, at a steady rate of new calls.

Setup (all on 127.0.0.1): a private redis-server; ONE orchestrator process
(`python -m callbridge.services.call_orchestrator orchestrator`, exactly what production runs); in
this
process the Infobip simulator (calls connect their WEBSOCKET leg without a gateway and
hang up after `--call-s`) and a minimal stand-in for the webhook ingress that XADDs each
webhook to the events stream with `received_at`, as the ingress does. Every follow-up
event (CALL_ESTABLISHED, DIALOG_*, CALL_FINISHED) flows through the orchestrator too.

Latency per call = (simulator's arrival time of POST /calls/1/dialogs) - (received_at).
Both clocks are this machine's wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from callbridge.shared import redis_keys
from callbridge.shared.infobip_events import CallsEvent
from callbridge.shared.redis_server import RedisServer, free_port
from callbridge.simulators.infobip import CallScript, InfobipSimulator

ROOT = Path(__file__).resolve().parents[2]


class Ingress:
    """POST /webhook -> XADD (body, type, call_id, received_at) -> 200."""

    def __init__(self, redis_url: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.received_at: dict[str, int] = {}
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        received_at = int(time.time() * 1000)
        event = CallsEvent.model_validate_json(body)
        call_id = event.subject_call_id() or ""
        await self.redis.xadd(redis_keys.EVENTS_STREAM, {
            "body": body, "type": event.type, "call_id": call_id,
            "received_at": str(received_at)})
        if event.type == "CALL_RECEIVED":
            self.received_at.setdefault(call_id, received_at)
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


async def bench(args: argparse.Namespace) -> dict[str, Any]:
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
            latencies = []
            posts: dict[str, int] = {}
            first_post: dict[str, float] = {}
            for req in sim.dialog_requests:
                parent = str((req.json or {}).get("parentCallId"))
                posts[parent] = posts.get(parent, 0) + 1
                first_post.setdefault(parent, req.at)
            for call in calls:
                received = ingress.received_at.get(call.call_id)
                if received is not None and call.call_id in first_post:
                    latencies.append((first_post[call.call_id] - received / 1000) * 1000)
            inside = await scrape_dialog_latency(metrics_port)
            cpu_s = cpu_seconds(proc.pid) - cpu_before
            self_cpu_s = cpu_seconds(os.getpid()) - self_before
            wall_s = time.monotonic() - start
            await asyncio.gather(*(c.wait_finished(60) for c in calls),
                                 return_exceptions=True)
        finally:
            proc.terminate()  # SIGTERM: the orchestrator drains and exits
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            await sim.stop()
            await ingress.stop()
    return {
        "rate_per_s": args.rate, "seconds": args.seconds, "local_start": not args.no_local_start,
        "calls": len(calls), "bridged": sum(1 for c in calls if c.dialog_id),
        "dialog_posts": len(sim.dialog_requests),
        "calls_with_more_than_one_post": sum(1 for v in posts.values() if v > 1),
        "orchestrator_view": inside,
        "orchestrator_cpu_pct_of_one_core": round(100 * cpu_s / wall_s, 1),
        "driver_cpu_pct_of_one_core": round(100 * self_cpu_s / wall_s, 1),
        "load_average_1m": os.getloadavg()[0],
        "latency_ms": {"p50": pct(latencies, 50), "p90": pct(latencies, 90),
                       "p99": pct(latencies, 99), "max": max(latencies or [float("nan")])},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.orchestrator",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="new calls per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to drive calls")
    parser.add_argument("--call-s", type=float, default=3.0, help="each call's duration")
    parser.add_argument("--quick", action="store_true", help="5 s (CI)")
    parser.add_argument("--no-local-start", action="store_true",
                        help="disable the fast path: arq's 0.5 s queue poll only")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the orchestrator to FILE")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 5.0
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(result))
        return 0
    lat = result["latency_ms"]
    print(f"orchestrator benchmark: {result['calls']} calls at {args.rate:g}/s for "
          f"{args.seconds:g} s, one orchestrator process, local start "
          f"{'on' if result['local_start'] else 'off'}")
    print(f"webhook received -> dialog request (ms): p50 {lat['p50']:.1f}  "
          f"p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f}")
    print(f"calls bridged: {result['bridged']}/{result['calls']}  dialog POSTs: "
          f"{result['dialog_posts']}  calls with >1 POST: "
          f"{result['calls_with_more_than_one_post']}")
    print(f"orchestrator CPU: {result['orchestrator_cpu_pct_of_one_core']:.0f}% of one core; "
          f"driver (simulator + ingress stand-in) {result['driver_cpu_pct_of_one_core']:.0f}%; "
          f"machine load average (1 min) {result['load_average_1m']:.2f} on "
          f"{os.cpu_count()} cores")
    print("orchestrator's own view (received_at -> its POST), share of calls: " + ", ".join(
        f"{k}: {v:.0%}" for k, v in result["orchestrator_view"].items()
        if k in ("<= 5 ms", "<= 10 ms", "<= 25 ms", "<= 50 ms", "<= 100 ms")))
    print(f"jobs left to the 0.5 s queue poll (worker full): "
          f"{result['orchestrator_view']['jobs left to the queue poll']:.0f}")
    sys.stdout.flush()
    return 0

"""Benchmark the webhook ingress against a no-op aiohttp handler, in one run.

    python -m bench.ingress            # full run (8 s per level, 3 repeats, medians)
    python -m bench.ingress --quick    # ~1 minute smoke run
    python -m bench.ingress --json     # machine-readable results instead of the table
    python -m bench.ingress --variants durable,noop,express --rates 2000   # the anchors only

Layout on a 2-core box: the server process alone on core 0 (`taskset -c 0`), the load
generator and a private redis-server on core 1. For each repeat, each variant (durable,
single, noop: see server.py; express: bench/anchors/express_webhook.js) is started fresh and
driven at saturation and at each fixed rate. Everything listens on and targets 127.0.0.1
only; every loop is bounded in count and time.

Anchors: `noop` (an aiohttp handler that stores nothing) and `express` (a minimal Express
app in the design of Infobip's OpenAI tutorial: parse, log, answer 200, store nothing) run in
the same repeats as the durable ingress, and the run prints durable/express and durable/noop
(saturation req/s, and capacity by CPU at each fixed rate), because our machines differ by up
to 3x from day to day and only ratios taken in one run compare. `express` needs node and npm
(its locked packages are installed by bench/anchors/node.py) and is skipped, with a message,
without them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.anchors.node import NodeUnavailable, node_command
from callbridge.shared.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
SERVER_CORE, CLIENT_CORE = "0", "1"
TARGET_RPS, TARGET_P99_MS, TARGET_RATE = 6200, 20.0, 2000
#: Anchor targets, as ratios of saturation throughput measured in the same run:
#: durable >= 2.0x Express and >= 0.6x the no-op aiohttp handler.
TARGET_VS_ANCHOR = {"express": 2.0, "noop": 0.6}
VARIANTS = ("durable", "single", "noop", "express")


@dataclass
class Level:
    variant: str
    load: str  # "saturation" or "<rate>/s"
    repeat: int
    rps: float
    p50_ms: float
    p99_ms: float
    completed: int
    non_200: int
    errors: int
    server_cpu: float  # share of one core
    gen_cpu: float


def _pin(core: str | None) -> list[str]:
    return ["taskset", "-c", core] if core is not None else []


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (0 where /proc is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"server did not listen on {port} within {timeout}s")


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1000.0


def _drive(port: int, rate: float, args: argparse.Namespace, pin: bool) -> dict[str, object]:
    """Run the generator process(es) for one level and merge their results."""
    gens = args.generators
    conns = args.rate_connections if rate else args.connections
    cmd = [*(_pin(CLIENT_CORE) if pin else []), sys.executable, "-m", "bench.ingress.loadgen",
           "--port", str(port), "--duration", str(args.duration), "--warmup", str(args.warmup),
           "--connections", str(max(1, conns // gens)), "--rate", str(rate / gens)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE) for _ in range(gens)]
    limit = args.warmup + args.duration + 60
    outs = []
    for proc in procs:
        stdout = proc.communicate(timeout=limit)[0]
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed with exit code {proc.returncode}")
        outs.append(json.loads(stdout))
    latencies = sorted(v for out in outs for v in out.get("latencies_us", []))
    statuses: dict[str, int] = {}
    for out in outs:
        for status, n in out.get("statuses", {}).items():
            statuses[status] = statuses.get(status, 0) + n
    completed = sum(int(out.get("completed", 0)) for out in outs)
    elapsed = max(float(out.get("elapsed_s", args.duration)) for out in outs)
    return {"completed": completed, "statuses": statuses, "latencies": latencies,
            "elapsed": elapsed, "errors": sum(int(out.get("errors", 0)) for out in outs),
            "gen_cpu": sum(float(out.get("cpu_util", 0.0)) for out in outs)}


def _run_variant(variant: str, redis: RedisServer, repeat: int, args: argparse.Namespace,
                 pin: bool) -> list[Level]:
    port = free_port()
    env = dict(os.environ)
    if variant == "express":
        node, extra = node_command("express_webhook.js")
        cmd = [*(_pin(SERVER_CORE) if pin else []), *node, "--port", str(port),
               "--path", "/webhook", "--log", args.express_log]
        env.update(extra)
    else:
        cmd = [*(_pin(SERVER_CORE) if pin else []), sys.executable, "-m",
               "bench.ingress.server", "--variant", variant, "--port", str(port),
               "--redis-url", redis.url]
        if args.no_uvloop:
            cmd.append("--no-uvloop")
    # The servers' stdout is /dev/null: Express's per-request log line is written there
    # (synchronously, as Node writes to files), so it costs what logging to a file costs.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    levels: list[Level] = []
    try:
        _wait_port(port, proc)
        for rate in [0.0, *args.rates]:
            cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            out = _drive(port, rate, args, pin)
            server_cpu = (_cpu_seconds(proc.pid) - cpu0) / max(1e-9, time.monotonic() - t0)
            lat: list[int] = out["latencies"]  # type: ignore[assignment]
            statuses: dict[str, int] = out["statuses"]  # type: ignore[assignment]
            completed = int(out["completed"])  # type: ignore[call-overload]
            levels.append(Level(
                variant=variant, load="saturation" if not rate else f"{int(rate)}/s",
                repeat=repeat, rps=completed / float(out["elapsed"]),  # type: ignore[arg-type]
                p50_ms=_percentile(lat, 0.50), p99_ms=_percentile(lat, 0.99),
                completed=completed, non_200=completed - statuses.get("200", 0),
                errors=int(out["errors"]),  # type: ignore[call-overload]
                server_cpu=server_cpu, gen_cpu=float(out["gen_cpu"]),  # type: ignore[arg-type]
            ))
            print(f"  {variant:8} {levels[-1].load:>10}  {levels[-1].rps:9.0f} req/s  "
                  f"p50 {levels[-1].p50_ms:6.2f} ms  p99 {levels[-1].p99_ms:6.2f} ms",
                  file=sys.stderr, flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return levels


def _medians(levels: list[Level]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    keys = list(dict.fromkeys((lv.variant, lv.load) for lv in levels))
    for variant, load in keys:
        group = [lv for lv in levels if (lv.variant, lv.load) == (variant, load)]
        rows.append({
            "variant": variant, "load": load, "runs": len(group),
            "rps": statistics.median(lv.rps for lv in group),
            "p50_ms": statistics.median(lv.p50_ms for lv in group),
            "p99_ms": statistics.median(lv.p99_ms for lv in group),
            "non_200": sum(lv.non_200 for lv in group),
            "errors": sum(lv.errors for lv in group),
            "server_cpu": statistics.median(lv.server_cpu for lv in group),
            "gen_cpu": statistics.median(lv.gen_cpu for lv in group),
        })
    return rows


def anchor_ratios(levels: list[Level]) -> list[dict[str, object]]:
    """durable / anchor for each anchor that ran: at saturation the ratio of req/s, at each
    fixed rate the ratio of capacity by CPU (anchor's server CPU / durable's, both serving the
    same rate); each the median of the repeats' ratios (the variants of one repeat ran back
    to back)."""
    by = {(lv.variant, lv.load, lv.repeat): lv for lv in levels}
    loads = list(dict.fromkeys(lv.load for lv in levels if lv.variant == "durable"))
    rows: list[dict[str, object]] = []
    for anchor in TARGET_VS_ANCHOR:
        if not any(lv.variant == anchor for lv in levels):
            continue
        row: dict[str, object] = {"anchor": anchor}
        for load in loads:
            ratios = []
            for (variant, lv_load, rep), lv in by.items():
                other = by.get((anchor, load, rep))
                if variant != "durable" or lv_load != load or other is None:
                    continue
                if load == "saturation" and other.rps > 0:
                    ratios.append(lv.rps / other.rps)
                elif load != "saturation" and lv.server_cpu > 0:
                    ratios.append(other.server_cpu / lv.server_cpu)
            row[load] = statistics.median(ratios) if ratios else float("nan")
        rows.append(row)
    return rows


def _ratio_table(ratios: list[dict[str, object]]) -> list[str]:
    if not ratios:
        return []
    loads = [k for k in ratios[0] if k != "anchor"]
    lines = ["", "durable / anchor, median of the repeats' ratios (saturation: req/s; fixed "
             "rates: capacity by CPU = anchor's server CPU / durable's)", "",
             "| anchor | " + " | ".join(loads) + " |", "|---|" + "---:|" * len(loads)]
    for row in ratios:
        lines.append(f"| {row['anchor']} | " + " | ".join(
            f"{float(row[load]):.2f}x" for load in loads) + " |")  # type: ignore[arg-type]
    lines.append("")
    for row in ratios:
        target = TARGET_VS_ANCHOR[str(row["anchor"])]
        value = float(row.get("saturation", float("nan")))  # type: ignore[arg-type]
        lines.append(f"target durable >= {target:g}x {row['anchor']} at saturation: "
                     f"{value:.2f}x -> {'MET' if value >= target else 'MISSED'}")
    return lines


def _table(rows: list[dict[str, object]], args: argparse.Namespace, pin: bool,
           ratios: list[dict[str, object]] | None = None) -> str:
    head = (f"ingress benchmark: {args.duration:g} s per level, median of {args.repeat} run(s), "
            f"{args.connections} connections at saturation, {args.rate_connections} at fixed "
            f"rates, server {'pinned to core ' + SERVER_CORE if pin else 'not pinned'}, "
            f"{'asyncio loop' if args.no_uvloop else 'uvloop'}")
    if getattr(args, "load_avg", None):
        start, end = args.load_avg
        head += (f"\nmachine load average (1 min) {start:.2f} at the start, {end:.2f} at the end, "
                 f"on {os.cpu_count()} cores")
    lines = [head, "",
             "| variant | load | req/s | p50 ms | p99 ms | non-200 | server CPU | gen CPU |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['load']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['non_200']} | {float(r['server_cpu']):.0%} | "  # type: ignore[arg-type]
            f"{float(r['gen_cpu']):.0%} |"  # type: ignore[arg-type]
        )
    sat = next((r for r in rows if r["variant"] == "durable" and r["load"] == "saturation"), None)
    at_rate = next((r for r in rows if r["variant"] == "durable"
                    and r["load"] == f"{TARGET_RATE}/s"), None)
    lines.append("")
    if sat is not None:
        ok = float(sat["rps"]) >= TARGET_RPS  # type: ignore[arg-type]
        lines.append(f"target durable saturation >= {TARGET_RPS:,} req/s: "
                     f"{sat['rps']:,.0f} -> {'MET' if ok else 'MISSED'}")
    if at_rate is not None:
        ok = float(at_rate["p99_ms"]) <= TARGET_P99_MS  # type: ignore[arg-type]
        lines.append(f"target durable p99 <= {TARGET_P99_MS:g} ms at {TARGET_RATE:,}/s: "
                     f"{at_rate['p99_ms']:.2f} ms -> {'MET' if ok else 'MISSED'}")
    lines.extend(_ratio_table(ratios or []))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingress", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 s per level, one repeat")
    parser.add_argument("--json", action="store_true", help="print JSON, not the table")
    parser.add_argument("--duration", type=float, help="seconds per level (default 8)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--repeat", type=int, help="runs per variant; medians (default 3)")
    parser.add_argument("--rates", default="500,2000,4000", help="fixed rates, req/s")
    parser.add_argument("--connections", type=int, default=32, help="at saturation")
    parser.add_argument("--rate-connections", type=int, default=64, help="at fixed rates")
    parser.add_argument("--generators", type=int, default=1, help="generator processes")
    parser.add_argument("--variants", default="durable,single,noop,express",
                        help=f"comma-separated, of {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--with-express", action="store_true",
                        help="add the Express anchor to --variants if it is not there")
    parser.add_argument("--express-log", choices=["line", "full"], default="line",
                        help="the Express anchor's per-request log: one line (default) or the "
                             "whole parsed event, as the tutorial logs it")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's loop everywhere")
    parser.add_argument("--redis-aof", choices=["no", "everysec", "always"], default="no",
                        help="persistence of the private Redis (default: none)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 8.0)
    args.repeat = max(1, min(args.repeat or (1 if args.quick else 3), 20))
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    variants = list(dict.fromkeys(v.strip() for v in args.variants.split(",") if v.strip()))
    if args.with_express and "express" not in variants:
        variants.append("express")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: choose from {VARIANTS}")
    if "express" in variants:
        try:
            node_command("express_webhook.js")  # installs the locked packages on first use
        except NodeUnavailable as exc:
            print(f"bench.ingress: skipping the Express anchor: {exc}", file=sys.stderr)
            variants.remove("express")
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2

    load_start = os.getloadavg()[0]
    redis = RedisServer(appendonly=args.redis_aof != "no",
                        appendfsync=args.redis_aof if args.redis_aof != "no" else "everysec")
    redis.start()
    levels: list[Level] = []
    try:
        if pin and redis.proc is not None:
            subprocess.run(["taskset", "-pc", CLIENT_CORE, str(redis.proc.pid)],
                           stdout=subprocess.DEVNULL, check=False)
        for repeat in range(args.repeat):
            print(f"run {repeat + 1}/{args.repeat}", file=sys.stderr, flush=True)
            for variant in variants:
                levels.extend(_run_variant(variant, redis, repeat, args, pin))
    finally:
        redis.close()
    args.load_avg = (load_start, os.getloadavg()[0])
    rows = _medians(levels)
    ratios = anchor_ratios(levels) if "durable" in variants else []
    if args.json:
        print(json.dumps({"rows": rows, "runs": [asdict(lv) for lv in levels],
                          "ratios": ratios, "load_average_1m": args.load_avg, "pinned": pin,
                          "duration_s": args.duration},
                         indent=2))
    else:
        print(_table(rows, args, pin, ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())

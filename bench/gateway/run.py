"""Benchmark the media gateway: N simulated real-time calls through one gateway process.

    python -m bench.gateway                  # levels 25..300, 15 s measured per level
    python -m bench.gateway --quick          # two small levels, ~1 minute
    python -m bench.gateway --levels 100,250 --seconds 20 --rate 24000 --json
    python -m bench.gateway.calibrate        # only the machine's cost of one frame send
    python -m bench.gateway --relay floor --levels 100,150   # the minimal Python relay
    python -m bench.gateway --relay gateway,floor,node --levels 100,150 --repeat 3
                                             # the gateway beside its anchors, with ratios

Layout on a 2-core box (as in the gateway's reference measurement): the gateway alone
on core 0 (`taskset -c 0`); the OpenAI simulator (replies at 4x real time), a private
redis-server and the load generators (simulated Infobip media legs, caller speech both
ways) on core 1. Each level starts a fresh gateway and simulator. Everything listens on and
targets 127.0.0.1; every loop is bounded in count and time.

Measured per level, over the same window:
- added relay latency, p99, from the gateway's own histogram (scraped from /metrics before
  and after): caller frame received -> sent to the model, and model audio received (or frame
  due) -> frame sent to the caller. Reported as the histogram bucket bound that holds p99.
- at the legs: late frames (gap between received frames > 40 ms), dropped frames (fewer
  frames than real time allows), the largest gap; and the generator's own loop lag, because
  an overloaded generator reports gaps that are its own.
- gateway CPU (utime+stime from /proc/<pid>/stat, one core = 100 %) and RSS above the idle
  process (VmRSS), per call.
A level passes with p99 <= 10 ms in both directions and no late or dropped frames.

Anchors (`--relay` takes a comma-separated list): `floor` is the minimal Python relay
(floor_relay.py), `node` a minimal Node relay in the design of Infobip's OpenAI tutorial
(bench/anchors/node_relay.js, `ws` installed from the lock by bench/anchors/node.py). Several
relays run interleaved at each level (and each repeat) under the same legs, simulator and
pinning, and a last table prints CPU per call side by side with the ratios, because our
machines differ by up to 3x from day to day and only ratios taken in one run compare.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.anchors.node import NodeUnavailable, node_command
from bench.gateway import calibrate
from bench.gateway.calibrate import GATEWAY_CORE, LOAD_CORE, pin
from callbridge.shared.realtime_events import MODEL_RATE
from callbridge.shared.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
CALLS_PER_GENERATOR = 75
TARGET_P99_S = 0.010
LEVELS = (25, 50, 100, 150, 200, 250, 300)
QUICK_LEVELS = (10, 25)
RELAYS = ("gateway", "floor", "node")
#: The anchors' target: the gateway's CPU per call at most this many times the Node relay's,
#: at these levels.
TARGET_VS_NODE, TARGET_LEVELS = 1.0, (100, 150)
#: Above this share of the window spent waiting for its core (other processes on core 0), a
#: relay is starved: it does less work than the load asks (frames dropped), so its CPU per
#: call reads low and a ratio against it means little. The side-by-side table flags it.
STARVED_RUNQ_PCT = 10.0
TITLES = {
    "gateway": "media gateway",
    "floor": "the floor (the minimal Python relay, bench/gateway/floor_relay.py)",
    "node": "the Node relay (the Infobip tutorial's design, bench/anchors/node_relay.js)",
}


@dataclass
class Level:
    calls: int
    connected: int
    cpu_pct: float
    rss_mb: float
    rss_per_call_mb: float
    p99_to_caller_ms: float
    p99_to_model_ms: float
    p99_loop_lag_ms: float
    runq_wait_pct: float
    late: int
    max_gap_ms: float
    dropped: int
    gateway_late: int
    gen_lag_max_ms: float
    passed: bool
    relay: str = "gateway"
    repeat: int = 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runq_wait_s(pid: int) -> float:
    """Seconds the process sat runnable but not running (/proc/<pid>/schedstat, field 2):
    CPU contention from other processes on its core, as opposed to our own slowness."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return str(resp.read().decode())


def _wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            _get(port, "/healthz")
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing answered on {port} within {timeout}s")


def _wait_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {port} within {timeout}s")


def _histograms(text: str) -> dict[str, dict[float, float]]:
    """to_caller / to_model / loop_lag / gc_gen<N> -> {le: cumulative count}."""
    out: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("callbridge_gateway_relay_latency_seconds",
                               "callbridge_gateway_loop_lag_seconds",
                               "callbridge_gateway_gc_pause_seconds"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                key = sample.labels.get("direction") or (
                    f"gc_gen{sample.labels['generation']}" if "generation" in sample.labels
                    else "loop_lag")
                out.setdefault(key, {})[le] = sample.value
    return out


def _counter(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


def _p99(before: dict[float, float], after: dict[float, float]) -> float:
    """Upper bound (seconds) of the bucket holding the 99th percentile of the window."""
    bounds = sorted(after)
    delta = [after[b] - before.get(b, 0.0) for b in bounds]
    total = delta[-1] if delta else 0.0
    if total <= 0:
        return float("nan")
    for bound, cumulative in zip(bounds, delta, strict=True):
        if cumulative >= 0.99 * total:
            return bound
    return math.inf


def relay_command(relay: str) -> tuple[list[str], dict[str, str]]:
    """The command starting `relay` (without the pinning prefix) and its extra environment.
    Raises NodeUnavailable for `node` when Node or its packages cannot be had."""
    py = sys.executable
    if relay == "gateway":
        return [py, "-m", "callbridge.services.cli", "gateway"], {}
    if relay == "floor":
        return [py, "-m", "bench.gateway.floor_relay"], {}
    return node_command("node_relay.js")


def run_level(calls: int, args: argparse.Namespace, redis_url: str, relay: str = "gateway",
              repeat: int = 0) -> Level:
    py = sys.executable
    sim_port, gw_port = free_port(), free_port()
    quiet = {**os.environ, "LOG_LEVEL": "WARNING", "LOG_FORMAT": "text"}
    sim = subprocess.Popen([*pin(LOAD_CORE), py, "-m", "callbridge.services.cli", "sim", "openai",
                            "--port", str(sim_port), "--speed", "4", "--log-level", "WARNING"],
                           cwd=ROOT, env=quiet, stdout=subprocess.DEVNULL)
    env = {**quiet, "REDIS_URL": redis_url, "OPENAI_API_KEY": "sk-sim",
           "OPENAI_REALTIME_URL": f"ws://127.0.0.1:{sim_port}/v1/realtime",
           "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(gw_port),
           "GATEWAY_MAX_SESSIONS": str(calls + 10), "GATEWAY_DRAIN_TIMEOUT_S": "2",
           "GATEWAY_IDLE_TIMEOUT_S": "30", "GATEWAY_ID": f"bench-{calls}"}
    command, extra_env = relay_command(relay)
    if args.profile and relay == "gateway":
        command = [py, "-m", "cProfile", "-o", f"{args.profile}.{calls}", *command[1:]]
    gateway = subprocess.Popen([*pin(GATEWAY_CORE), *command], cwd=ROOT,
                               env={**env, **extra_env}, stdout=subprocess.DEVNULL)
    generators: list[subprocess.Popen[bytes]] = []
    try:
        _wait_port(sim_port)
        _wait_http(gw_port, gateway)
        idle_rss = _rss_mb(gateway.pid)
        start_at = time.time() + 2.0
        n_gen = max(1, math.ceil(calls / CALLS_PER_GENERATOR))
        for g in range(n_gen):
            share = calls // n_gen + (1 if g < calls % n_gen else 0)
            generators.append(subprocess.Popen(
                [*pin(LOAD_CORE), py, "-m", "bench.gateway.legs",
                 "--url", f"ws://127.0.0.1:{gw_port}/media", "--redis", redis_url,
                 "--calls", str(share), "--rate", str(args.rate), "--start-at", str(start_at),
                 "--ramp", str(args.ramp), "--warmup", str(args.warmup),
                 "--seconds", str(args.seconds), "--seed", str(g)],
                cwd=ROOT, env=quiet, stdout=subprocess.PIPE))
        window_start = start_at + args.ramp + args.warmup
        time.sleep(max(0.0, window_start - time.time()))
        metrics_before, cpu_before, t0 = _get(gw_port, "/metrics"), _cpu_seconds(gateway.pid), \
            time.monotonic()
        wait_before = _runq_wait_s(gateway.pid)
        peak_rss = 0.0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:  # bounded by the window
            peak_rss = max(peak_rss, _rss_mb(gateway.pid))
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))
        cpu_after, t1 = _cpu_seconds(gateway.pid), time.monotonic()
        runq_pct = (_runq_wait_s(gateway.pid) - wait_before) / (t1 - t0) * 100.0
        metrics_after = _get(gw_port, "/metrics")
        results = []
        for gen in generators:
            out, _ = gen.communicate(timeout=120)
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for proc in (*generators, gateway, sim):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (*generators, gateway, sim):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    before, after = _histograms(metrics_before), _histograms(metrics_after)
    if args.verbose:
        for direction, buckets in sorted(after.items()):
            old = before.get(direction, {})
            print(f"  {calls} calls, {direction}: " + ", ".join(
                f"<={le * 1000:g}ms:{int(n - old.get(le, 0))}"
                for le, n in sorted(buckets.items())),
                file=sys.stderr)
    p99_caller = _p99(before.get("to_caller", {}), after.get("to_caller", {}))
    p99_model = _p99(before.get("to_model", {}), after.get("to_model", {}))
    p99_lag = _p99(before.get("loop_lag", {}), after.get("loop_lag", {}))
    connected = sum(int(r["calls"]) for r in results) - sum(int(r["closed_early"])
                                                             for r in results)
    late = sum(int(r["late"]) for r in results)
    dropped = sum(int(r["dropped"]) for r in results)
    gw_late = int(_counter(metrics_after, "callbridge_gateway_late_frames")
                  - _counter(metrics_before, "callbridge_gateway_late_frames"))
    cpu_pct = (cpu_after - cpu_before) / (t1 - t0) * 100.0
    rss = peak_rss - idle_rss
    passed = (connected == calls and late == 0 and dropped == 0
              and p99_caller <= TARGET_P99_S and p99_model <= TARGET_P99_S)
    return Level(calls, connected, round(cpu_pct, 1), round(peak_rss, 1),
                 round(rss / max(1, calls), 3), p99_caller * 1000, p99_model * 1000, p99_lag * 1000,
                 round(runq_pct, 1), late,
                 max(float(r["max_gap_ms"]) for r in results), dropped, gw_late,
                 round(max(float(r["gen_lag_max_ms"]) for r in results), 1), passed, relay,
                 repeat)


def _fmt_ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"<={value:g}"


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def print_table(levels: list[Level], args: argparse.Namespace,
                send_cost: calibrate.SendCost, relay: str = "gateway") -> None:
    """One relay's levels as the benchmark has always printed them (a `run` column first
    when there are repeats)."""
    print(f"\n{TITLES[relay]}, {args.rate} Hz, {args.seconds:g} s measured per level; relay on "
          f"core {GATEWAY_CORE}, simulator + legs + Redis on core {LOAD_CORE}")
    print(f"machine: {send_cost.describe()}")
    repeats = args.repeat > 1
    head: tuple[str, ...] = (
        "calls", "ok", "gw CPU %", "CPU %/call", "RSS MB", "MB/call", "p99 ->caller ms",
        "p99 ->model ms", "gw lag p99 ms", "runq wait %", "late", "max gap ms", "dropped",
        "gw late", "gen lag max ms", "pass")
    if repeats:
        head = ("run", *head)
    rows: list[tuple[str, ...]] = [head] + [(
        *((str(lv.repeat + 1),) if repeats else ()),
        str(lv.calls), str(lv.connected), f"{lv.cpu_pct:.1f}",
        f"{lv.cpu_pct / max(1, lv.calls):.3f}", f"{lv.rss_mb:.0f}", f"{lv.rss_per_call_mb:.3f}",
        _fmt_ms(lv.p99_to_caller_ms), _fmt_ms(lv.p99_to_model_ms),
        _fmt_ms(lv.p99_loop_lag_ms), f"{lv.runq_wait_pct:.1f}", str(lv.late),
        f"{lv.max_gap_ms:.0f}", str(lv.dropped), str(lv.gateway_late),
        f"{lv.gen_lag_max_ms:.1f}", "yes" if lv.passed else "NO") for lv in levels]
    _print_rows(rows)
    best = max((lv.calls for lv in levels if lv.passed), default=0)
    cpu_per_call = [lv.cpu_pct / lv.calls for lv in levels if lv.calls >= 100] or \
        [lv.cpu_pct / lv.calls for lv in levels]
    by_cpu = 100.0 / (sum(cpu_per_call) / len(cpu_per_call)) if cpu_per_call else 0.0
    print(f"\nlargest N with p99 <= 10 ms and no late/dropped frames: {best}")
    print(f"calls per core by CPU (mean CPU per call at >= 100 calls): {by_cpu:.0f}")


_PAIRS = (("gateway", "node"), ("gateway", "floor"), ("floor", "node"))


def _cpu_per_call(lv: Level) -> float:
    return lv.cpu_pct / max(1, lv.calls)


def compare(levels: list[Level], relays: list[str]) -> list[dict[str, float]]:
    """Per level: each relay's median CPU per call and MB per call over the repeats, and for
    each pair the median of the repeats' ratios (the relays of one repeat ran back to back
    at that level, so each ratio is taken over the same few minutes of the machine)."""
    rows: list[dict[str, float]] = []
    for calls in sorted({lv.calls for lv in levels}):
        at = {(lv.relay, lv.repeat): lv for lv in levels if lv.calls == calls}
        row: dict[str, float] = {"calls": calls}
        for relay in relays:
            group = [lv for (r, _), lv in at.items() if r == relay]
            row[f"{relay}_cpu_per_call"] = statistics.median(
                [_cpu_per_call(lv) for lv in group]) if group else math.nan
            row[f"{relay}_mb_per_call"] = statistics.median(
                [lv.rss_per_call_mb for lv in group]) if group else math.nan
            row[f"{relay}_runs"] = len(group)
            row[f"{relay}_runq_wait_max"] = max(
                (lv.runq_wait_pct for lv in group), default=math.nan)
        for a, b in _PAIRS:
            if a not in relays or b not in relays:
                continue
            ratios = [_cpu_per_call(at[(a, rep)]) / _cpu_per_call(at[(b, rep)])
                      for (r, rep) in at if r == a and (b, rep) in at
                      and at[(b, rep)].cpu_pct > 0]
            row[f"{a}/{b}"] = statistics.median(ratios) if ratios else math.nan
        rows.append(row)
    return rows


def print_comparison(rows: list[dict[str, float]], relays: list[str],
                     args: argparse.Namespace) -> None:
    pairs = [(a, b) for a, b in _PAIRS if a in relays and b in relays]
    runs = "median of " + (f"{args.repeat} runs" if args.repeat > 1 else "1 run")
    print(f"\nside by side: CPU % of a core per call ({runs}; each level ran the relays back to "
          f"back); ratios: the median of each run's ratio")
    head = ("calls", *(f"{r} CPU %/call" for r in relays), *(f"{a}/{b}" for a, b in pairs),
            *(f"{r} MB/call" for r in relays), "max runq wait %")
    table = [head] + [(
        str(int(row["calls"])), *(f"{row[f'{r}_cpu_per_call']:.3f}" for r in relays),
        *(f"{row[f'{a}/{b}']:.2f}x" for a, b in pairs),
        *(f"{row[f'{r}_mb_per_call']:.3f}" for r in relays),
        f"{max(row[f'{r}_runq_wait_max'] for r in relays):.1f}") for row in rows]
    _print_rows(table)
    starved = [int(row["calls"]) for row in rows
               if max(row[f"{r}_runq_wait_max"] for r in relays) > STARVED_RUNQ_PCT]
    if starved:
        print(f"\nWARNING: at {', '.join(map(str, starved))} calls a relay waited for its core "
              f"more than {STARVED_RUNQ_PCT:g} % of a window (other processes on core "
              f"{GATEWAY_CORE}): a starved relay drops work and its CPU per call reads low; "
              f"re-run those levels on a quieter machine")
    if "gateway" in relays and "node" in relays:
        ratios = {int(row["calls"]): row["gateway/node"] for row in rows
                  if int(row["calls"]) in TARGET_LEVELS}
        if ratios:
            met = all(v <= TARGET_VS_NODE for v in ratios.values())
            missing = [n for n in TARGET_LEVELS if n not in ratios]
            print(f"\ntarget gateway CPU per call <= {TARGET_VS_NODE:g}x the Node relay's at "
                  f"{' and '.join(str(n) for n in TARGET_LEVELS)} calls: "
                  + ", ".join(f"{n} calls {v:.2f}x" for n, v in sorted(ratios.items()))
                  + f" -> {'MET' if met else 'MISSED'}"
                  + (f" (not run: {', '.join(map(str, missing))} calls)" if missing else ""))


def _resolve_relays(requested: list[str]) -> list[str]:
    """The relays that can run here: `node` is dropped, with the reason on stderr, when Node,
    npm or the locked packages cannot be had (installing them on first use)."""
    if "node" not in requested:
        return requested
    try:
        relay_command("node")
    except NodeUnavailable as exc:
        print(f"bench.gateway: skipping the Node relay: {exc}", file=sys.stderr)
        return [r for r in requested if r != "node"]
    return requested


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two small levels, 5 s each")
    parser.add_argument("--levels", help="comma-separated call counts (default 25..300)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured per level")
    parser.add_argument("--ramp", type=float, default=4.0, help="seconds to connect all calls")
    parser.add_argument("--warmup", type=float, default=3.0, help="after the ramp")
    parser.add_argument("--rate", type=int, default=24000, help="media-stream sample rate")
    parser.add_argument("--stop-after-fail", type=int, default=2,
                        help="stop after this many failed levels in a row")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--verbose", action="store_true",
                        help="print each level's histograms on stderr: relay latency, loop "
                             "lag and GC pauses by generation (a stall's usual suspects)")
    parser.add_argument("--relay", default="gateway",
                        help="what relays the calls, one or a comma-separated list run "
                             "interleaved with a side-by-side table and ratios: gateway (as "
                             "deployed, the default), floor (the minimal Python relay, "
                             "floor_relay.py), node (the minimal Node relay of the Infobip "
                             "tutorial's design, bench/anchors/node_relay.js; skipped with a "
                             "message without node/npm). The anchors have no latency "
                             "histograms and do not pace, so only their CPU and memory compare")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of every level and relay; the side-by-side table takes "
                             "medians (default 1)")
    parser.add_argument("--profile", metavar="PATH",
                        help="run the gateway under cProfile, writing PATH.<calls>")
    args = parser.parse_args(argv)
    requested = list(dict.fromkeys(r.strip() for r in args.relay.split(",") if r.strip()))
    unknown = [r for r in requested if r not in RELAYS]
    if not requested or unknown:
        parser.error(f"--relay takes {', '.join(RELAYS)} (comma-separated); got {args.relay!r}")
    if any(r != "gateway" for r in requested) and args.rate != MODEL_RATE:
        parser.error("the anchors relay 24 kHz only (they do not resample): drop --rate")
    args.repeat = max(1, min(args.repeat, 20))
    if args.quick:
        args.seconds, args.ramp, args.warmup = 5.0, 2.0, 2.0
    levels = ([int(x) for x in args.levels.split(",")] if args.levels
              else list(QUICK_LEVELS if args.quick else LEVELS))
    relays = _resolve_relays(requested)
    if not relays:
        return 0  # only the Node relay was asked for, and it cannot run here (said why)
    results: list[Level] = []
    fails = 0
    if shutil.which("taskset") and hasattr(os, "sched_setaffinity"):
        # This runner and the redis-server it starts stay off the gateway's core.
        os.sched_setaffinity(0, {int(LOAD_CORE)})
    send_cost = calibrate.measure(pin(GATEWAY_CORE), pin(LOAD_CORE))
    if not args.json:
        print(f"  machine: {send_cost.describe()}", file=sys.stderr)
    # Failures that stop the run are the gateway's (the anchors neither pace nor fill
    # silence, so their legs always report gaps), or the only relay's.
    judged = "gateway" if "gateway" in relays else relays[0]
    with RedisServer(extra_args=["--maxclients", "10000"]) as r:
        for calls in levels:
            verdicts = []
            for repeat in range(args.repeat):
                for relay in relays:
                    level = run_level(calls, args, r.url, relay, repeat)
                    results.append(level)
                    if relay == judged:
                        verdicts.append(level.passed)
                    if not args.json:
                        print(f"  {calls} calls, {relay}"
                              f"{f' (run {repeat + 1})' if args.repeat > 1 else ''}: "
                              f"{'pass' if level.passed else 'FAIL'}, CPU "
                              f"{_cpu_per_call(level):.3f} %/call", file=sys.stderr)
            passed = sum(verdicts) * 2 > len(verdicts)  # a majority of the repeats
            fails = 0 if passed else fails + 1
            if fails >= args.stop_after_fail:
                break
    rows = compare(results, relays) if len(relays) > 1 else []
    if args.json:
        print(json.dumps({"send_cost": asdict(send_cost), "relays": relays,
                          "levels": [asdict(lv) for lv in results], "side_by_side": rows},
                         indent=2))
        return 0
    for relay in relays:
        print_table([lv for lv in results if lv.relay == relay], args, send_cost, relay)
    if rows:
        print_comparison(rows, relays, args)
    return 0

"""Scenarios 12a-c: attacks on the edge (load balancer and webhook ingress).

12a fail-open configurations are refused: the real `callbridge ingress` command, started
    with no webhook authentication, with an empty secret, or against a Redis without AOF,
    exits non-zero with a message naming what to set; the explicit opt-outs start and warn.
12b forwarded-header spoofing through the real HAProxy of a running stack: a source outside
    WEBHOOK_ALLOWLIST posting with valid credentials and forged `Forwarded:` and
    `X-Forwarded-For:` headers naming an allowed address is refused (403) and nothing is
    stored; the allowed source itself is accepted through the same HAProxy.
12c header dribblers (through HAProxy and straight at the ingress) are cut off within their
    timeouts, and oversized events (a call event over INGRESS_EVENT_MAX_BYTES, an unknown
    type over INGRESS_UNKNOWN_EVENT_MAX_BYTES) get 413; the events stream is unchanged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from bench.faults.drive import post_raw, probe_body
from bench.faults.report import Row
from bench.faults.runner import Ctx
from bench.faults.slow_client import dribble_request_head
from bench.faults.stack import FaultOptions, webhook_headers
from callbridge.services.stack.haproxy import EdgeLimits
from callbridge.shared import redis_keys
from callbridge.shared.redis_server import RedisServer, free_port

ALLOWED, ATTACKER = "127.0.0.2", "127.0.0.3"


# 12a ---------------------------------------------------------------------------------------

def _ingress(env: dict[str, str], cwd: Path, wait_listening: bool = False
             ) -> tuple[int | None, str]:
    """Run `callbridge ingress` (exit code, output). With `wait_listening`, stop it with
    SIGTERM once it logs that it listens (exit code None if it never did, bounded)."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("WEBHOOK_", "INGRESS_", "REDIS_URL"))}
    full = {**base, "LOG_FORMAT": "text", "INGRESS_PORT": str(free_port()),
            "INGRESS_DRAIN_DELAY_S": "0", **env}
    argv = [sys.executable, "-m", "callbridge.services.cli", "ingress"]
    if not wait_listening:
        done = subprocess.run(argv, cwd=cwd, env=full, capture_output=True, text=True,
                              timeout=30, check=False)
        return done.returncode, done.stdout + done.stderr
    proc = subprocess.Popen(argv, cwd=cwd, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 20
    try:
        for line in proc.stdout:  # bounded: the process exits or we stop it
            lines.append(line)
            if "ingress listening" in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        return (proc.returncode if any("ingress listening" in x for x in lines) else None,
                "".join(lines))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()


async def fail_open_refused(ctx: Ctx, row: Row) -> None:
    cwd = Path(tempfile.mkdtemp(prefix="attack-edge-", dir=ctx.log_root))  # no .env here
    ctx.phase("redis servers")
    with RedisServer(appendonly=True) as aof, RedisServer(appendonly=False) as no_aof:
        basic = {"WEBHOOK_BASIC_USER": "infobip", "WEBHOOK_BASIC_PASSWORD": "x" * 32}
        cases = [
            # (name, env, expected exit, text the message must contain)
            ("no auth", {"REDIS_URL": aof.url}, 2, "WEBHOOK_ALLOW_UNAUTHENTICATED=true"),
            ("empty HMAC secret", {"REDIS_URL": aof.url, "WEBHOOK_HMAC_SECRET": ""}, 2,
             "WEBHOOK_HMAC_SECRET is set but empty"),
            ("empty Basic password", {"REDIS_URL": aof.url, "WEBHOOK_BASIC_USER": "infobip",
                                      "WEBHOOK_BASIC_PASSWORD": " "}, 2,
             "WEBHOOK_BASIC_PASSWORD is set but empty"),
            ("Redis without AOF", {"REDIS_URL": no_aof.url, **basic}, 2,
             "INGRESS_REQUIRE_AOF=false"),
        ]
        ctx.phase("refused configurations")
        for name, env, expected, text in cases:
            code, output = await asyncio.to_thread(_ingress, env, cwd)
            row.events += 1
            row.faults += 1
            row.check(f"{name}: exit {expected}", code == expected, f"exit {code}")
            row.check(f"{name}: says what to set", text in output, output[-300:])
        ctx.phase("explicit opt-outs")
        code, output = await asyncio.to_thread(
            _ingress, {"REDIS_URL": no_aof.url, "WEBHOOK_ALLOW_UNAUTHENTICATED": "true",
                       "INGRESS_REQUIRE_AOF": "false"}, cwd, True)
        row.events += 1
        row.check("explicit opt-outs start (exit 0 on SIGTERM)", code == 0,
                  f"exit {code}: {output[-300:]!r}")
        row.check("and warn about both", "NOT authenticated" in output
                  and "INGRESS_REQUIRE_AOF=false" in output, output[-400:])
    row.lost = row.duplicated = row.cut = None


# 12b ---------------------------------------------------------------------------------------

async def _post_from(source: str, url: str, body: bytes, headers: dict[str, str]) -> int:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=5)) as http:
        return await post_raw(http, url, body, headers)


async def forwarded_spoofing(ctx: Ctx, row: Row) -> None:
    opts = FaultOptions(load_balancer=True, env={
        "WEBHOOK_ALLOWLIST": f"{ALLOWED}/32", "WEBHOOK_TRUSTED_PROXIES": "127.0.0.1/32"})
    async with ctx.stack("attack-edge-spoof", opts) as stack:
        client = stack.redis_client
        length_before = await client.xlen(redis_keys.EVENTS_STREAM)
        forged_sets = {
            "Forwarded": {"Forwarded": f"for={ALLOWED}"},
            "X-Forwarded-For": {"X-Forwarded-For": ALLOWED},
            "both": {"Forwarded": f'for="{ALLOWED}:4711"', "X-Forwarded-For": ALLOWED,
                     "X-Real-IP": ALLOWED},
        }
        ingress_direct = f"http://127.0.0.1:{stack.port_of('ingress-1')}/webhook"
        for name, forged in forged_sets.items():
            for where, url in (("via HAProxy", stack.webhook_url), ("direct", ingress_direct)):
                body = probe_body(f"spoof-{name}-{where}")
                status = await _post_from(ATTACKER, url, body,
                                          {**webhook_headers(body), **forged})
                row.events += 1
                row.faults += 1
                row.check(f"forged {name} {where}: 403", status == 403, f"status {status}")
        stored_forged = await client.xlen(redis_keys.EVENTS_STREAM) - length_before
        row.check("nothing stored from forged requests", stored_forged == 0,
                  f"{stored_forged} stored")
        body = probe_body("spoof-control")
        status = await _post_from(ALLOWED, stack.webhook_url, body, webhook_headers(body))
        row.events += 1
        row.check("the allowed source via HAProxy: 200", status == 200, f"status {status}")
        row.lost = stored_forged  # here: events stored that should not have been
    row.duplicated = row.cut = None


# 12c ---------------------------------------------------------------------------------------

def _oversized(type_: str, size: int, key: str) -> bytes:
    pad: dict[str, str] = {"pad": ""}
    event = {"type": type_, "callId": key, "timestamp": "2026-01-15T12:00:00.000+0000",
             "properties": {}, "customData": pad}
    pad["pad"] = "x" * (size - len(orjson.dumps(event)))
    return orjson.dumps(event)


async def dribblers_and_oversized(ctx: Ctx, row: Row) -> None:
    lb_timeout_s, ingress_timeout_s = 2.0, 2.0
    opts = FaultOptions(load_balancer=True,
                        edge_limits=EdgeLimits(http_request_timeout_s=lb_timeout_s),
                        env={"INGRESS_KEEPALIVE_TIMEOUT_S": str(ingress_timeout_s)})
    async with ctx.stack("attack-edge-slow-big", opts) as stack:
        client = stack.redis_client
        length_before = await client.xlen(redis_keys.EVENTS_STREAM)
        ctx.phase("dribblers")
        (lb_s, lb_answer), (direct_s, direct_answer) = await asyncio.gather(
            dribble_request_head(stack.lb_port, 15),
            dribble_request_head(stack.port_of("ingress-1"), 15))
        row.faults += 2
        row.check("HAProxy answers a header dribbler 408", lb_answer.startswith(
            b"HTTP/1.1 408") and lb_s < lb_timeout_s + 3, f"{lb_s:.1f}s {lb_answer[:40]!r}")
        row.check("the ingress closes a header dribbler", direct_answer == b""
                  and direct_s < ingress_timeout_s + 3, f"{direct_s:.1f}s {direct_answer[:40]!r}")
        row.notes.append(f"dribblers cut after {lb_s:.1f} s (HAProxy, timeout http-request "
                         f"{lb_timeout_s:.0f} s) and {direct_s:.1f} s (ingress, "
                         f"INGRESS_KEEPALIVE_TIMEOUT_S {ingress_timeout_s:.0f} s)")
        ctx.phase("oversized events")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for name, body in (("call event 20 KB", _oversized("CALL_RECEIVED", 20_000, "big-1")),
                               ("unknown type 5 KB", _oversized("NEW_TYPE", 5_000, "big-2"))):
                async with http.post(stack.webhook_url, data=body,
                                     headers=webhook_headers(body)) as resp:
                    answer = await resp.json(content_type=None)
                    row.faults += 1
                    row.check(f"{name}: 413 event_too_large", resp.status == 413
                              and answer.get("error") == "event_too_large",
                              f"{resp.status} {answer}")
            body = probe_body("small-control")
            control = await post_raw(http, stack.webhook_url, body)
        row.events += 1
        row.check("an ordinary event still 200", control == 200, f"status {control}")
        stored = [f[b"call_id"] for _, f in await client.xrange(redis_keys.EVENTS_STREAM)]
        unexpected = [c for c in stored[length_before:] if c != b"small-control"]
        row.check("events stream unchanged by the attacks", not unexpected, str(unexpected))
        row.lost = len(unexpected)
    row.duplicated = row.cut = None

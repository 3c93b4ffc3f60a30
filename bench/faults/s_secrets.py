"""Scenario 11: secrets never reach a log.

Every stack of the run was started with distinctive secret values (bench/faults/stack.py:
INFOBIP_API_KEY, OPENAI_API_KEY, WEBHOOK_BASIC_PASSWORD, WEBHOOK_HMAC_SECRET, REDIS_PASSWORD)
and used them for real (API calls, model connections, authenticated and refused webhooks,
every Redis connection: each service logs its redacted REDIS_URL). This scenario
runs one more small stack that also provokes the error paths where a secret could slip
into a log line (a refused webhook with a wrong password, a model refusing the key), then
greps every log file of the whole run — all services, HAProxy, Redis — for each secret in
the forms it travels in (raw, base64 of the Basic credentials, the Bearer/App headers).
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ResponseError

from bench.faults.drive import post_raw, probe_body
from bench.faults.report import Row
from bench.faults.runner import Ctx
from bench.faults.stack import BASIC_USER, SECRETS, FaultOptions, webhook_headers
from callbridge.simulators.infobip import CallScript


def needles() -> dict[str, str]:
    """Each secret, and the encoded forms it travels in."""
    out = {name: value for name, value in SECRETS.items()}
    basic = base64.b64encode(f"{BASIC_USER}:{SECRETS['WEBHOOK_BASIC_PASSWORD']}".encode())
    out["Basic credentials (base64)"] = basic.decode()
    out["REDIS_PASSWORD (URL-encoded)"] = quote(SECRETS["REDIS_PASSWORD"], safe="")
    return out


async def _redis_refuses_without_password(url_without_password: str) -> bool:
    client = aioredis.Redis.from_url(url_without_password, socket_timeout=3)
    try:
        await client.ping()
    except (AuthenticationError, ResponseError):
        return True
    finally:
        await client.aclose()
    return False


def _ops_command_output(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """An ops command pointed at an unreachable Redis with the password in its URL: its
    error message names the URL (redacted)."""
    env = {"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "callbridge.services.cli", *args], env=env,
                          capture_output=True, text=True, timeout=30, check=False)


def scan(dirs: list[Path]) -> tuple[int, int, dict[str, list[str]]]:
    """(files, lines, {secret name: [file:line, ...]}) over every *.log under `dirs`."""
    found: dict[str, list[str]] = {}
    files = lines = 0
    wanted = needles()
    for d in dirs:
        for path in sorted(d.rglob("*.log")):
            files += 1
            with path.open(errors="replace") as fh:
                for no, line in enumerate(fh, 1):
                    lines += 1
                    for name, value in wanted.items():
                        if value in line:
                            found.setdefault(name, []).append(f"{path.name}:{no}")
    return files, lines, found


async def secrets_in_logs(ctx: Ctx, row: Row) -> None:
    async with ctx.stack("secrets", FaultOptions()) as stack:
        sim, rt = stack.infobip, stack.openai
        assert sim is not None and rt is not None
        body = probe_body("secret-probe")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            bad = {**webhook_headers(body),
                   "Authorization": "Basic " + base64.b64encode(
                       f"{BASIC_USER}:wrong-{SECRETS['WEBHOOK_BASIC_PASSWORD']}".encode()
                   ).decode()}
            refused = await post_raw(http, stack.webhook_url, body, bad)
            ok = await post_raw(http, stack.webhook_url, body)
        password_required = await _redis_refuses_without_password(
            f"redis://127.0.0.1:{stack.redis.port}/0" if stack.redis else "")
        # Error paths of the ops commands that print REDIS_URL: nobody listens on port 1.
        down_url = f"redis://:{quote(SECRETS['REDIS_PASSWORD'], safe='')}@127.0.0.1:1/0"
        ops = [_ops_command_output(down_url, "dead-letters", "list"),
               _ops_command_output(down_url, "calls", "show", "x")]
        ops_log = Path(stack.log_dir) / "ops-commands.log"
        ops_log.write_text("".join(r.stdout + r.stderr for r in ops))
        rt.refuse_next(1, code=3000)  # the model refuses the key once: an error path
        call = await sim.place_call(CallScript(caller_wav=None, reply_timeout_s=0.5,
                                               max_duration_s=30))
        await call.wait_finished(40)
        row.calls, row.events, row.faults = 1, 2, 2
    row.check("wrong password refused", refused == 401, f"status {refused}")
    row.check("right credentials accepted", ok == 200, f"status {ok}")
    row.check("Redis requires its password", password_required,
              "a client without the password was served")
    row.check("ops commands failed and said so", all(r.returncode != 0 and "Redis" in
                                                       (r.stdout + r.stderr) for r in ops),
              "; ".join(f"rc {r.returncode}: {(r.stdout + r.stderr)[-200:]!r}" for r in ops))
    dirs = sorted(set(ctx.log_dirs))
    files, lines, found = scan(dirs)
    row.lost = sum(len(v) for v in found.values())
    row.duplicated = row.cut = None
    row.notes.append(f"scanned {files} log files, {lines} lines, from {len(dirs)} stacks")
    row.check("no secret in any log", not found,
              "; ".join(f"{k} in {v[:3]}" for k, v in found.items()))
    row.check("logs were scanned", files > 0 and lines > 0, "no log files")

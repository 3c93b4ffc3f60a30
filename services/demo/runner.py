"""`callbridge demo`: the whole system on this machine, a few simulated calls, a report."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from services.demo.report import CallReport, build_report
from services.stack.runner import LocalStack, StackOptions


@dataclass
class DemoOptions:
    calls: int = 1
    caller_wav: Path | None = None
    out_dir: Path = Path("demo-out")
    redis_url: str | None = None
    sample_rate: int = 16000
    load_balancer: bool = False
    replicas: int = 1
    call_timeout_s: float = 90.0
    quiet: bool = False


def _say(opts: DemoOptions, text: str) -> None:
    if not opts.quiet:
        print(text, file=sys.stderr, flush=True)


async def run_demo(opts: DemoOptions) -> list[CallReport]:
    from simulators import ASSETS_DIR
    from simulators.infobip import CallScript

    caller_wav = opts.caller_wav or ASSETS_DIR / "caller_order_status.wav"
    stack_opts = StackOptions(
        replicas={"ingress": opts.replicas, "orchestrator": opts.replicas,
                  "gateway": opts.replicas},
        load_balancer=opts.load_balancer, simulate=True, redis_url=opts.redis_url,
        sample_rate=opts.sample_rate, log_dir=opts.out_dir / "logs")
    _say(opts, "starting Redis, the simulators and the services ...")
    async with LocalStack(stack_opts) as stack:
        for what, where in stack.describe():
            _say(opts, f"  {what:<18} {where}")
        assert stack.infobip is not None
        _say(opts, f"placing {opts.calls} call(s) with {caller_wav.name} ...")
        calls = await asyncio.gather(*(stack.infobip.place_call(CallScript(caller_wav=caller_wav))
                                       for _ in range(opts.calls)))
        await asyncio.gather(*(call.wait_finished(timeout=opts.call_timeout_s)
                               for call in calls))
        _say(opts, "calls finished; collecting records ...")
        client = aioredis.Redis.from_url(stack.redis_url)
        try:
            # The gateway writes its final session record when the media socket closes,
            # which can trail the caller's hang-up by a moment: wait for it (bounded).
            await _wait_sessions_ended(client, [c.call_id for c in calls], timeout=10)
            return [await build_report(call, stack.infobip, client, opts.sample_rate,
                                       opts.out_dir) for call in calls]
        finally:
            await client.aclose()


async def _wait_sessions_ended(client: aioredis.Redis, call_ids: list[str],
                               timeout: float) -> None:
    from shared import redis_keys

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        states = [await client.hget(redis_keys.session_record(c), "state") for c in call_ids]
        if all(s == b"ended" for s in states):
            return
        await asyncio.sleep(0.05)  # bounded poll of a record another process writes

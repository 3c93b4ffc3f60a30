"""A worker process killed at each step of a call's job: the call is still bridged, once.

Each case runs a real `callbridge orchestrator` subprocess ("doomed") that SIGKILLs itself
at one step (kill_points.py; for "POST in flight" the test kills it while the simulated
platform holds the request), then a survivor orchestrator takes over. Arq's job timeout and
the idle-entry backstop are set far beyond the test's wait, so only the lease mechanism
(lease.py) can recover the call in time: on the code before it, every case waits ~33 s.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from callbridge.services.call_orchestrator import call_record
from callbridge.shared import redis_keys
from callbridge.simulators.infobip import CallScript, InfobipSimulator
from tests.orchestrator.fixtures import dialog_posts, orch_settings, running, sim_stack
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[2]

#: Far beyond the test's waits: recovery through arq's in-progress expiry or the claim's
#: deadline (both derived from the job timeout) cannot happen before the test gives up.
JOB_TIMEOUT_S = 40.0
#: What the test waits for a takeover: several leases (1.5 s), much less than a job timeout.
TAKEOVER_WAIT_S = 12.0


@asynccontextmanager
async def platform(redis_url: str) -> AsyncIterator[tuple[InfobipSimulator, str]]:
    async with sim_stack(redis_url) as parts:
        yield parts["sim"], parts["cfg"]


@asynccontextmanager
async def doomed_orchestrator(redis_url: str, sim: InfobipSimulator, cfg: str, kill_at: str,
                              redis_client: aioredis.Redis
                              ) -> AsyncIterator[asyncio.subprocess.Process]:
    """A `callbridge orchestrator` subprocess armed to die at `kill_at`; killed on exit if
    it is still alive."""
    env = {**os.environ, "REDIS_URL": redis_url, "INFOBIP_BASE_URL": sim.base_url,
           "INFOBIP_API_KEY": "sim-infobip-key", "INFOBIP_MEDIA_STREAM_CONFIG_ID": cfg,
           "INFOBIP_REQUEST_TIMEOUT_S": "2", "ORCHESTRATOR_JOB_TIMEOUT_S": str(JOB_TIMEOUT_S),
           "ORCHESTRATOR_CLAIM_IDLE_S": "600", "ORCHESTRATOR_METRICS_PORT": "0",
           "ORCHESTRATOR_KILL_AT": kill_at, "LOG_FORMAT": "text", "LOG_LEVEL": "INFO"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbridge.services.call_orchestrator", "orchestrator",
        "--consumer-name", "doomed", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def consumer_up() -> bool:
        try:
            consumers = await redis_client.xinfo_consumers(redis_keys.EVENTS_STREAM,
                                                           redis_keys.EVENTS_GROUP)
        except Exception:
            return False
        return any(c["name"] in (b"doomed", "doomed") for c in consumers)

    try:
        await wait_until(consumer_up, timeout=20, what="the doomed orchestrator's consumer")
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)


def survivor_settings(redis_url: str, sim: InfobipSimulator, cfg: str) -> Any:
    return orch_settings(redis_url, sim.base_url, cfg, infobip_request_timeout_s=2.0,
                         orchestrator_job_timeout_s=JOB_TIMEOUT_S,
                         orchestrator_claim_idle_s=600.0)


@pytest.mark.parametrize("kill_at", [
    "consumer.read",    # entry read, job not enqueued: the entry is pending for a dead consumer
    "bridge.started",   # job running, nothing claimed: its in-progress key outlives the process
    "bridge.claimed",   # dialog claim held by a dead process, no POST sent
    "post-in-flight",   # POST sent, the platform applies it after the sender died
    "bridge.posted",    # POST answered, dialog id never recorded
])
async def test_worker_killed_at_each_step_bridges_exactly_once(
        kill_at: str, redis_url: str, redis_client: aioredis.Redis) -> None:
    async with platform(redis_url) as (sim, cfg):
        in_flight = kill_at == "post-in-flight"
        async with doomed_orchestrator(redis_url, sim, cfg, "" if in_flight else kill_at,
                                       redis_client) as proc:
            if in_flight:
                # The platform applies it 3 s after receipt, after the sender's 2 s timeout.
                sim.faults.delay_next(1, 3.0)
            call = await sim.place_call(CallScript(caller_wav=None, connect_to_media=False,
                                                   hangup_after_s=60))
            if in_flight:
                await wait_until(lambda: sim.dialog_requests, what="the POST in flight")
                proc.kill()
            await asyncio.wait_for(proc.wait(), 20)
            assert proc.returncode == -9, "the doomed process did not die at its kill point"
            died_at = time.time()
            posts_before = len(dialog_posts(sim, call.call_id))

            async with running(survivor_settings(redis_url, sim, cfg), "survivor"):
                async def bridged() -> bool:
                    rec = await call_record.load(redis_client, call.call_id)
                    return bool(rec.get("dialog_id"))

                await wait_until(bridged, timeout=TAKEOVER_WAIT_S,
                                 what=f"the survivor's takeover after a kill at {kill_at}")
                await wait_until(lambda: _queue_empty(redis_client), timeout=10,
                                 what="the job queue drained")
                rec = await call_record.load(redis_client, call.call_id)

    posts = dialog_posts(sim, call.call_id)
    assert len(posts) == 1, f"{len(posts)} dialog requests for one call"
    assert len(call.dialogs) == 1
    assert rec["dialog_id"] == call.dialog_id
    if kill_at in ("post-in-flight", "bridge.posted"):
        assert posts_before == 1, "the dead process's own POST is the one that bridged"
    else:
        assert posts_before == 0
        # The survivor's request came a few leases after the death at most, not a job
        # timeout later (a correctness bound on the mechanism, not a performance target).
        assert posts[0].at - died_at < TAKEOVER_WAIT_S


async def _queue_empty(redis_client: aioredis.Redis) -> bool:
    return await redis_client.zcard(redis_keys.JOB_QUEUE) == 0


async def test_caller_gone_before_takeover_is_recorded_unbridged(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    """The caller hangs up while the only worker that had their call lies dead: the call is
    recorded as never bridged (not as a quiet success), and no dialog is requested."""
    async with platform(redis_url) as (sim, cfg):
        async with doomed_orchestrator(redis_url, sim, cfg, "bridge.claimed",
                                       redis_client) as proc:
            call = await sim.place_call(CallScript(caller_wav=None, connect_to_media=False,
                                                   hangup_after_s=0.3))
            await asyncio.wait_for(proc.wait(), 20)
            await wait_until(lambda: call.end_reason is not None, timeout=10,
                             what="the caller hung up")
            async with running(survivor_settings(redis_url, sim, cfg), "survivor"):
                async def settled() -> bool:
                    rec = await call_record.load(redis_client, call.call_id)
                    return rec.get("unbridged") == "1" and await _queue_empty(redis_client)

                await wait_until(settled, timeout=TAKEOVER_WAIT_S,
                                 what="the call recorded as never bridged")
                rec = await call_record.load(redis_client, call.call_id)
    assert rec["state"] == "ended"
    assert not rec.get("dialog_id")
    assert dialog_posts(sim, call.call_id) == []


async def test_dead_consumers_that_hold_nothing_are_forgotten(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    """Every restart makes a new consumer name; the dead ones that hold no entry leave the
    group (bounded XINFO), while a live one, or a dead one still holding entries, stays
    until its entries are taken over."""
    async with platform(redis_url) as (sim, cfg):
        await redis_client.xgroup_create(redis_keys.EVENTS_STREAM, redis_keys.EVENTS_GROUP,
                                         id="0", mkstream=True)
        for name in ("ghost", "living"):
            await redis_client.xgroup_createconsumer(redis_keys.EVENTS_STREAM,
                                                     redis_keys.EVENTS_GROUP, name)
        await redis_client.set(redis_keys.orchestrator_lease("living"), "instance-1", px=60_000)

        async def names() -> set[str]:
            consumers = await redis_client.xinfo_consumers(redis_keys.EVENTS_STREAM,
                                                           redis_keys.EVENTS_GROUP)
            return {c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                    for c in consumers}

        async with running(survivor_settings(redis_url, sim, cfg), "survivor"):
            async def ghost_gone() -> bool:
                return "ghost" not in await names()

            await wait_until(ghost_gone, timeout=TAKEOVER_WAIT_S, what="the ghost forgotten")
            assert "living" in await names()

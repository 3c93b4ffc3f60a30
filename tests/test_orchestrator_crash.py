"""A worker SIGKILLed while its dialog POST is in flight: the call is still bridged once."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.call_orchestrator import call_record
from shared import redis_keys
from simulators.infobip import CallScript, InfobipSimulator
from tests.orchestrator_fixtures import (
    StreamIngress,
    dialog_posts,
    orch_settings,
    running,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[1]


async def test_worker_killed_mid_post_bridges_exactly_once(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    ingress = StreamIngress(redis_url)
    await ingress.start()
    sim = InfobipSimulator(webhook_url=ingress.url)
    await sim.start()
    cfg = sim.add_media_stream_config(url="ws://127.0.0.1:9/media", sample_rate=24000)
    env = {**os.environ, "REDIS_URL": redis_url, "INFOBIP_BASE_URL": sim.base_url,
           "INFOBIP_API_KEY": "sim-infobip-key", "INFOBIP_MEDIA_STREAM_CONFIG_ID": cfg,
           "INFOBIP_REQUEST_TIMEOUT_S": "1", "ORCHESTRATOR_JOB_TIMEOUT_S": "4",
           "ORCHESTRATOR_METRICS_PORT": "0", "LOG_FORMAT": "text", "LOG_LEVEL": "INFO"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.call_orchestrator", "orchestrator",
        "--consumer-name", "doomed", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async def consumer_up() -> bool:
            try:
                consumers = await redis_client.xinfo_consumers(redis_keys.EVENTS_STREAM,
                                                               redis_keys.EVENTS_GROUP)
            except Exception:
                return False
            return any(c["name"] == b"doomed" or c["name"] == "doomed" for c in consumers)

        await wait_until(consumer_up, timeout=20, what="subprocess consumer")
        # The platform will take 3 s to answer (and then apply) the POST.
        sim.faults.delay_next(1, 3.0)
        call = await sim.place_call(CallScript(caller_wav=None, connect_to_media=False,
                                               hangup_after_s=40))
        await wait_until(lambda: sim.dialog_requests, what="POST in flight")
        proc.kill()  # SIGKILL while the POST is in flight
        await asyncio.wait_for(proc.wait(), 10)

        async with running(orch_settings(redis_url, sim.base_url, cfg), "survivor"):
            async def bridged() -> bool:
                rec = await call_record.load(redis_client, call.call_id)
                queued = await redis_client.zcard(redis_keys.JOB_QUEUE)
                return bool(rec.get("dialog_id")) and queued == 0

            await wait_until(bridged, timeout=30, what="call bridged by the survivor")
            rec = await call_record.load(redis_client, call.call_id)
        assert rec["dialog_id"] == call.dialog_id
        assert len(dialog_posts(sim, call.call_id)) == 1
        assert len(call.dialogs) == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
        await sim.stop()
        await ingress.stop()

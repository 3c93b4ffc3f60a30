"""Operations: health/readiness/metrics, graceful SIGTERM, CLI help and error advice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from callbridge.services.call_orchestrator.__main__ import main as orch_main
from callbridge.shared import redis_keys
from callbridge.shared.redis_server import free_port
from tests.orchestrator.fixtures import orch_settings, running
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


async def test_health_ready_metrics(redis_url: str) -> None:
    settings = orch_settings(redis_url, "http://127.0.0.1:9", "cfg")
    async with running(settings) as orch, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{orch.port}"
        async with session.get(base + "/healthz") as resp:
            assert resp.status == 200

        async def ready() -> bool:
            async with session.get(base + "/readyz") as resp:
                return resp.status == 200

        await wait_until(ready, what="ready")
        async with session.get(base + "/metrics") as resp:
            text = await resp.text()
        for suffix in ("jobs_total", "calls_api_seconds", "stream_lag", "stream_pending",
                       "dead_letters", "retries_total"):
            assert f"callbridge_orchestrator_{suffix}" in text


async def test_sigterm_drains_and_exits(redis_url: str, redis_client: aioredis.Redis) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "INFOBIP_BASE_URL": "http://127.0.0.1:9",
           "INFOBIP_API_KEY": "k", "INFOBIP_MEDIA_STREAM_CONFIG_ID": "cfg",
           "ORCHESTRATOR_METRICS_PORT": str(free_port()), "LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbridge.services.call_orchestrator", "orchestrator",
        "--consumer-name", "graceful", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async def joined() -> bool:
            try:
                consumers = await redis_client.xinfo_consumers(redis_keys.EVENTS_STREAM,
                                                               redis_keys.EVENTS_GROUP)
            except Exception:
                return False
            return bool(consumers)

        await wait_until(joined, timeout=20, what="consumer joined")
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    assert '"orchestrator stopped"' in log


def test_cli_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["replay", "--help"], ["dead-letters", "--help"], ["orchestrator", "--help"]):
        with pytest.raises(SystemExit):
            orch_main(argv)
        out = capsys.readouterr().out
        assert "examples:" in out


def test_unreachable_redis_names_redis_url() -> None:
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = subprocess.run(
        [sys.executable, "-m", "callbridge.services.call_orchestrator", "dead-letters", "list"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert "REDIS_URL" in result.stderr


async def test_entries_left_pending_by_a_dead_consumer_are_claimed(
        redis_url: str, redis_client: aioredis.Redis) -> None:
    from callbridge.services.call_orchestrator import call_record
    from tests.orchestrator.fixtures import make_event, xadd_event

    await redis_client.xgroup_create(redis_keys.EVENTS_STREAM, redis_keys.EVENTS_GROUP,
                                     id="0", mkstream=True)
    await xadd_event(redis_client, make_event(
        "CALL_FINISHED", "c-dead", callLog={"callId": "c-dead", "state": "FINISHED",
                                            "errorCode": {"name": "NORMAL_HANGUP"}}))
    # A consumer read it and died before acknowledging.
    await redis_client.xreadgroup(redis_keys.EVENTS_GROUP, "dead",
                                  {redis_keys.EVENTS_STREAM: ">"}, count=10)
    settings = orch_settings(redis_url, "http://127.0.0.1:9", "cfg",
                             orchestrator_claim_idle_s=0.3, orchestrator_claim_interval_s=0.2)
    async with running(settings, "alive"):
        async def ended() -> bool:
            rec = await call_record.load(redis_client, "c-dead")
            return rec.get("end_reason") == "NORMAL_HANGUP"

        await wait_until(ended, what="claimed entry handled")

        async def acked() -> bool:
            groups = await redis_client.xinfo_groups(redis_keys.EVENTS_STREAM)
            return groups[0]["pending"] == 0

        await wait_until(acked, what="claimed entry acknowledged")

"""Helpers for the orchestrator tests and benchmark: a minimal ingress stand-in, settings,
bounded waits, in-process orchestrators.

`StreamIngress` is *not* the webhook ingress service: it only XADDs each webhook body to
the events stream with the contract's fields (body, type, call_id, received_at), so these
tests depend on the orchestrator and the Infobip simulator alone.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from callbridge.services.call_orchestrator.config import OrchestratorSettings
from callbridge.services.call_orchestrator.service import Orchestrator
from callbridge.shared import redis_keys
from callbridge.shared.infobip_events import CallsEvent
from callbridge.simulators.infobip import CallScript, InfobipSimulator


class StreamIngress:
    """POST /webhook -> XADD EVENTS_STREAM (as the ingress does), 200 after Redis acked."""

    def __init__(self, redis_url: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.received = 0

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        received_at = str(int(time.time() * 1000))
        event = CallsEvent.model_validate_json(body)
        await self.redis.xadd(redis_keys.EVENTS_STREAM, {
            "body": body, "type": event.type, "call_id": event.subject_call_id() or "",
            "received_at": received_at})
        self.received += 1
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self._webhook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/webhook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        await self.redis.aclose()


def orch_settings(redis_url: str, base_url: str, config_id: str,
                  **overrides: Any) -> OrchestratorSettings:
    values: dict[str, Any] = dict(
        redis_url=redis_url, infobip_base_url=base_url, infobip_api_key="sim-infobip-key",
        infobip_media_stream_config_id=config_id, log_format="text",
        infobip_request_timeout_s=1.0, orchestrator_job_timeout_s=5.0,
        orchestrator_retry_base_s=0.05, orchestrator_retry_cap_s=0.5,
        orchestrator_retry_max_attempts=5, orchestrator_metrics_port=0,
        orchestrator_claim_idle_s=2.0, orchestrator_claim_interval_s=1.0,
        orchestrator_gateway_check_s=0.2, orchestrator_shutdown_grace_s=3.0,
        orchestrator_block_ms=200)
    values.update(overrides)
    return OrchestratorSettings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def running(settings: OrchestratorSettings, name: str | None = None
                  ) -> AsyncIterator[Orchestrator]:
    orch = Orchestrator(settings, consumer_name=name)
    await orch.start()
    try:
        yield orch
    finally:
        await orch.stop(grace_s=2.0)


def make_event(event_type: str, call_id: str, **properties: Any) -> bytes:
    return orjson.dumps({"type": event_type, "callId": call_id,
                         "timestamp": "2026-01-15T12:00:00.000+0000",
                         "properties": properties})


async def xadd_event(redis: aioredis.Redis, body: bytes) -> str:
    event = CallsEvent.model_validate_json(body)
    entry_id = await redis.xadd(redis_keys.EVENTS_STREAM, {
        "body": body, "type": event.type, "call_id": event.subject_call_id() or "",
        "received_at": str(int(time.time() * 1000))})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def dialog_posts(sim: Any, call_id: str) -> list[Any]:
    """Dialog requests for `call_id` that the simulator answered 201 (or any, if all)."""
    return [r for r in sim.dialog_requests
            if isinstance(r.json, dict) and r.json.get("parentCallId") == call_id]


def created(sim: Any, call_id: str) -> list[Any]:
    return [r for r in dialog_posts(sim, call_id) if r.status == 201]


@asynccontextmanager
async def sim_stack(redis_url: str) -> AsyncIterator[dict[str, Any]]:
    """A simulated Infobip account posting to a stand-in ingress, with a media-stream config
    (whose socket nobody serves: these tests bridge calls without a gateway)."""
    ingress = StreamIngress(redis_url)
    await ingress.start()
    sim = InfobipSimulator(webhook_url=ingress.url)
    await sim.start()
    cfg = sim.add_media_stream_config(url="ws://127.0.0.1:9/media", sample_rate=24000)
    try:
        yield {"sim": sim, "ingress": ingress, "cfg": cfg,
               "settings": orch_settings(redis_url, sim.base_url, cfg)}
    finally:
        await sim.stop()
        await ingress.stop()


def quiet_call(hangup_after_s: float = 20.0) -> CallScript:
    """A caller whose WEBSOCKET dialog connects without a gateway, and who stays a while."""
    return CallScript(connect_to_media=False, hangup_after_s=hangup_after_s, caller_wav=None)

"""Stand-ins for the Infobip simulator's tests: a webhook receiver (the ingress), a tiny
media gateway, and helpers. Plain classes and functions; the pytest fixtures that start them
live in tests/simulators/test_sim_infobip.py.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import orjson
from aiohttp import web
from websockets.asyncio.server import ServerConnection

from callbridge.shared.infobip_events import CallsEvent
from callbridge.shared.infobip_media import CLEAR_MESSAGE
from callbridge.shared.pcm import is_silent
from callbridge.simulators.infobip import InfobipSimulator

KEY = "test-key"
AUTH = {"Authorization": f"App {KEY}"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")

def tone(ms: int, rate: int, amplitude: int = 8000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 440 * t) * amplitude).astype("<i2").tobytes()



# --- in-test webhook receiver (stands in for the ingress) ----------------------------------

@dataclass
class Receiver:
    events: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    fail_first: int = 0
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=500)
        event = orjson.loads(body)
        self.events.append(event)
        self.headers.append(dict(request.headers))
        self.bodies.append(body)
        self.queue.put_nowait(event)
        return web.Response(status=200)

    async def next(self, event_type: str, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.queue.get()
                if event["type"] == event_type:
                    return event

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


# --- in-test gateway (stands in for the media gateway) ------------------------------------

@dataclass
class FakeGateway:
    """`converse`: greets with an 800 ms burst then clears it, replies 500 ms (burst) once
    the caller has been quiet 300 ms. `close_after`: closes 1000 after N caller frames."""

    mode: str = "converse"
    rate: int = 16000
    close_after_frames: int = 10
    connected: list[dict[str, Any]] = field(default_factory=list)
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    sent_audio: int = 0
    url: str = ""

    async def handler(self, ws: ServerConnection) -> None:
        self.connected.append(orjson.loads(await ws.recv()))
        frame = tone(20, self.rate)
        if self.mode == "close_after":
            async for msg in ws:
                if isinstance(msg, bytes):
                    self.frames.append((time.time(), msg))
                    if len(self.frames) >= self.close_after_frames:
                        await ws.close(1000, "agent ended the call")
                        return
            return
        for _ in range(40):
            await ws.send(frame)
        self.sent_audio += 40 * len(frame)
        await ws.send(CLEAR_MESSAGE)
        heard, quiet, replied = False, 0, False
        async for msg in ws:
            if isinstance(msg, str):
                self.texts.append(msg)
                continue
            self.frames.append((time.time(), msg))
            if not is_silent(msg):
                heard, quiet = True, 0
            elif heard:
                quiet += 1
            if heard and quiet >= 15 and not replied:
                replied = True
                for _ in range(25):
                    await ws.send(frame)
                self.sent_audio += 25 * len(frame)


async def create_dialog(http: aiohttp.ClientSession, sim: InfobipSimulator, call_id: str,
                        config_id: str, propagation: dict[str, Any] | None = None,
                        custom: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"parentCallId": call_id, "childCallRequest": {
        "endpoint": {"type": "WEBSOCKET", "websocketEndpointConfigId": config_id},
        "customData": custom or {"cbToken": "tok", "cbCallId": call_id, "cbProfile": "default"}}}
    if propagation is not None:
        body["propagationOptions"] = propagation
    async with http.post(sim.base_url + "/calls/1/dialogs", json=body, headers=AUTH) as resp:
        assert resp.status == 201, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result


def check_envelopes(events: list[dict[str, Any]], base_url: str) -> None:
    for event in events:
        assert TIMESTAMP.match(event["timestamp"]), event["timestamp"]
        assert "conversationId" not in event and "applicationId" not in event
        CallsEvent.model_validate(event)  # the shared model reads every one
        if event["type"] in ("CALL_FINISHED", "CALL_FAILED"):
            assert list(event["properties"]) == ["callLog"]
            assert "callId" in event["properties"]["callLog"]
        if event["type"] in ("CALL_RECEIVED", "CALL_ESTABLISHED"):
            assert event["properties"]["apiBaseUrl"] == base_url

"""Scenario 10: fuzzing — generated webhook bodies against the ingress, generated WebSocket
messages against a gateway from the Infobip side, and from the model side through a tiny
fuzzing fake "model" server (this module) that a dedicated gateway is pointed at with
OPENAI_REALTIME_URL (the OpenAI simulator itself stays faithful to the protocol).

Invariants: 0 crashes (every process alive), 0 answers >= 500 from the ingress (503 only
when Redis is down, and it is not here), no session closed with 1011 (internal error),
every fuzzed session still streaming afterwards, and the stack still serves a real call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.faults import fuzz_data
from bench.faults.drive import open_leg, post_raw, wait_for
from bench.faults.report import Row
from bench.faults.runner import Ctx
from bench.faults.stack import FaultOptions, FaultStack, webhook_headers
from callbridge.simulators.infobip import CallScript, MediaLeg

ALLOWED = {200, 400, 413, 415}


@dataclass
class FuzzModel:
    """A WebSocket server that answers every Realtime connection with generated events."""

    messages: list[bytes | str]
    sent: int = 0
    connections: int = 0
    _server: Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> str:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None,
                                   max_size=16 * 1024 * 1024)
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1/realtime"

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        reader = asyncio.create_task(self._drain(ws))
        try:
            for _ in range(len(self.messages)):
                if self.sent >= len(self.messages):
                    break
                msg = self.messages[self.sent]
                self.sent += 1
                await ws.send(msg)
                await asyncio.sleep(0.002)  # a busy model, not a flood that starves the box
            await ws.wait_closed()
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()

    async def _drain(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _fuzz_ingress(url: str, bodies: list[bytes]) -> Counter[int]:
    statuses: Counter[int] = Counter()
    sem = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async def one(body: bytes) -> None:
            async with sem:
                statuses[await post_raw(http, url, body, webhook_headers(body))] += 1
        await asyncio.gather(*(one(b) for b in bodies))
    return statuses


async def _fuzz_legs(legs: list[MediaLeg], messages: list[bytes | str]) -> None:
    for i, msg in enumerate(messages):
        leg = legs[i % len(legs)]
        if leg.closed:
            continue
        with contextlib.suppress(ConnectionClosed):
            if isinstance(msg, bytes):
                await leg.send_binary(msg)
            else:
                await leg.send_text(msg)
        if i % 50 == 0:
            await asyncio.sleep(0.01)  # keep the pace of a (very) noisy peer, not a flood


async def _first_messages(stack: FaultStack, url: str, messages: list[bytes | str]
                          ) -> Counter[str]:
    """New connections whose FIRST message is fuzz (instead of websocket:connected)."""
    codes: Counter[str] = Counter()
    for msg in messages:
        try:
            async with connect(url, compression=None, open_timeout=5) as ws:
                await ws.send(msg)
                with contextlib.suppress(TimeoutError, ConnectionClosed):
                    await asyncio.wait_for(ws.wait_closed(), 8)
                codes[str(ws.close_code)] += 1
        except InvalidStatus as exc:
            codes[f"http {exc.response.status_code}"] += 1
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            codes[type(exc).__name__] += 1
    return codes


def _streaming(legs: list[MediaLeg]) -> dict[int, int]:
    return {i: len(leg.frames) for i, leg in enumerate(legs)}


async def fuzz(ctx: Ctx, row: Row) -> None:
    n_hooks = ctx.size(500, 10_000)
    n_ws = ctx.size(250, 5_000)  # per side: both sides together >= 10,000 in the full run
    n_first = ctx.size(10, 60)
    bodies = await asyncio.to_thread(fuzz_data.generate, fuzz_data.webhook_bodies, n_hooks)
    caller = await asyncio.to_thread(fuzz_data.generate, fuzz_data.caller_messages, n_ws, 1)
    model = await asyncio.to_thread(fuzz_data.generate, fuzz_data.model_messages, n_ws, 2)
    firsts = caller[:n_first]
    fake = FuzzModel(model)
    fake_url = await fake.start()
    try:
        async with ctx.stack("fuzz", FaultOptions(env={"GATEWAY_IDLE_TIMEOUT_S": "30"})) as stack:
            statuses = await _fuzz_ingress(stack.webhook_url, bodies)
            gw_url = f"ws://127.0.0.1:{stack.port_of('gateway-1')}/media"
            legs = [(await open_leg(stack.redis_client, gw_url))[0] for _ in range(4)]
            await _fuzz_legs(legs, caller)
            first_codes = await _first_messages(stack, gw_url, firsts)
            _, fz_port = await stack.start_gateway("gateway-fuzz",
                                                   {"OPENAI_REALTIME_URL": fake_url})
            fz_url = f"ws://127.0.0.1:{fz_port}/media"
            fz_legs = [(await open_leg(stack.redis_client, fz_url))[0] for _ in range(3)]
            await wait_for(lambda: fake.sent >= len(model), ctx.sizef(20, 120))
            before = _streaming(legs + fz_legs)
            flowing = await wait_for(lambda: all(
                len(leg.frames) > before[i] + 25 for i, leg in enumerate(legs + fz_legs)), 5)
            closes = [leg.close_code for leg in legs + fz_legs if leg.closed]
            # Still serving: a real call through the sim, and a fresh leg on the fuzzed one.
            sim = stack.infobip
            assert sim is not None
            call = await sim.place_call(CallScript(caller_wav=None, reply_timeout_s=0.5,
                                                   max_duration_s=30))
            await call.wait_finished(40)
            late_leg, _ = await open_leg(stack.redis_client, fz_url)
            late_ok = await wait_for(lambda: len(late_leg.frames) > 10, 5)
            for leg in [*legs, *fz_legs, late_leg]:
                await leg.aclose()
            alive = stack.alive()
    finally:
        await fake.stop()
    row.calls = len(legs) + len(fz_legs) + 2
    row.events = len(bodies) + len(caller) + fake.sent
    row.faults = row.events
    row.lost = sum(v for s, v in statuses.items() if s >= 500 or s == 0)
    row.duplicated, row.cut = None, len(closes)
    row.notes.append(f"ingress {dict(statuses)}; first-message closes {dict(first_codes)}; "
                     f"model fuzz {fake.sent} events over {fake.connections} connections")
    row.check("ingress: 0 answers >= 500", not [s for s in statuses if s >= 500 or s == 0],
              str(dict(statuses)))
    row.check("ingress: only documented statuses", set(statuses) <= ALLOWED,
              str(dict(statuses)))
    row.check("no session closed by the fuzz", not closes, f"close codes {closes}")
    row.check("fuzzed sessions still streaming", flowing, "frames stopped")
    row.check("no internal-error close on first messages", "1011" not in first_codes,
              str(dict(first_codes)))
    row.check("real call served afterwards", call.end_reason == "caller_hangup"
              and "first_agent_audio" in call.timeline, f"{call.end_reason}")
    row.check("fuzzed gateway admits a new call", late_ok, "no frames on a fresh leg")
    row.check("0 crashes", all(alive.values()), str(alive))

"""Scenario 7: half-open and abusive peers, on both public ports.

Invariants: a media socket that goes silent without closing (no frames, no pongs, no close)
ends within GATEWAY_IDLE_TIMEOUT_S / the keep-alive timeout and its model socket is freed; slowloris
clients (headers or body dribbled byte by byte) on the webhook port do not starve honest
webhooks (every one answered 200) and body dribblers get 408; an oversized WebSocket message
closes with 1009; a connection past GATEWAY_MAX_SESSIONS gets a clean HTTP 503 on upgrade;
odd-length / empty audio frames and malformed control JSON never end a session. The model
side's malformed events are scenario 10's fuzzing fake model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from bench.faults.drive import WebhookDriver, issue_token, open_leg, wait_async, wait_for
from bench.faults.report import Row
from bench.faults.runner import Ctx
from bench.faults.stack import BASIC_HEADER, FaultOptions, FaultStack, decode
from callbridge.shared import redis_keys
from callbridge.shared.infobip_media import build_connected
from callbridge.simulators.infobip import CallScript

IDLE_S, KEEPALIVE_S, CAP = 3.0, 2.0, 3
MALFORMED: list[bytes | str] = [
    b"", b"\x01", b"\x00" * 961, b"\x7f" * 3, "{not json", "[]", "null", '"text"',
    '{"event": "websocket:connected", "content-type": "audio/l16;rate=16000"}',
    '{"event": "websocket:dtmf"}', '{"event": 42}', '{"action": "clear"}', "\x00\xff",
    '{"event": "websocket:dtmf", "digit": "' + "9" * 5000 + '"}',
]


async def _slowloris(port: int, n: int, seconds: float, body: bool) -> list[bytes]:
    """`n` connections dribbling headers (or, with `body`, a declared body) one byte at a
    time; returns what the server answered on each (empty: nothing)."""
    async def one() -> bytes:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return b"refused"
        head = b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if body:
            # Authenticated (Basic): an unauthenticated one is refused before its body.
            head += (f"Authorization: {BASIC_HEADER}\r\nContent-Type: application/json\r\n"
                     "Content-Length: 4000\r\n\r\n{").encode()
        writer.write(head)
        answer = b""
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline and not writer.is_closing():
                writer.write(b"x" if body else b"X-Slow: 1\r\n"[:1])
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(reader.read(200), 0.5)
                    if answer:
                        break
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        return answer
    return list(await asyncio.gather(*(one() for _ in range(n))))


async def _half_open(stack: FaultStack, url: str) -> tuple[str, ClientConnection]:
    """A peer that connects, streams a little, then neither sends, reads nor closes."""
    call_id = "fault-halfopen-" + str(int(time.time() * 1000))
    token = await issue_token(stack.redis_client, call_id)
    ws = await connect(url, compression=None)
    await ws.send(build_connected(16000, {"cbToken": token, "cbCallId": call_id}))
    for _ in range(10):
        await ws.send(bytes(640))
    ws.transport.pause_reading()  # no pongs from now on, nothing read, nothing sent
    return call_id, ws


async def abuse(ctx: Ctx, row: Row) -> None:
    opts = FaultOptions(env={
        "GATEWAY_MAX_SESSIONS": str(CAP), "GATEWAY_IDLE_TIMEOUT_S": str(IDLE_S),
        "GATEWAY_KEEPALIVE_INTERVAL_S": str(KEEPALIVE_S), "GATEWAY_KEEPALIVE_TIMEOUT_S":
        str(KEEPALIVE_S),
        "INGRESS_BODY_TIMEOUT_S": "3"})
    seconds = ctx.sizef(8, 20)
    async with ctx.stack("abuse", opts) as stack:
        sim, rt, client = stack.infobip, stack.openai, stack.redis_client
        assert sim is not None and rt is not None
        url = f"ws://127.0.0.1:{stack.port_of('gateway-1')}/media"
        ingress_port = stack.port_of("ingress-1")
        driver = WebhookDriver(stack.webhook_url, rate=40)
        loris_n = ctx.size(40, 150)
        background = asyncio.gather(
            driver.run(limit=10_000, max_s=seconds),
            _slowloris(ingress_port, loris_n, seconds, body=False),
            _slowloris(ingress_port, 5, seconds, body=True))
        row.faults += loris_n + 5

        legs = [await open_leg(client, url) for _ in range(2)]
        half_id, half_ws = await _half_open(stack, url)
        t_half = time.time()
        row.faults += 1
        refused = ""
        try:
            extra = await connect(url, compression=None, open_timeout=5)
            await extra.close()
            refused = "admitted past the cap"
        except InvalidStatus as exc:
            refused = str(exc.response.status_code)
        row.faults += 1
        row.check("past the cap: HTTP 503", refused == "503", refused)

        noisy, _ = legs[0]
        frames_before = len(noisy.frames)
        for msg in MALFORMED:
            if isinstance(msg, bytes):
                await noisy.send_binary(msg)
            else:
                await noisy.send_text(msg)
        row.faults += len(MALFORMED)
        row.events += len(MALFORMED)
        alive = await wait_for(lambda: len(noisy.frames) > frames_before + 50, 5)
        row.check("malformed input did not end the session", alive and not noisy.closed,
                  f"closed={noisy.closed} code={noisy.close_code} {noisy.close_reason}")

        big, _ = legs[1]
        await big.send_binary(bytes(128 * 1024))
        row.faults += 1
        await big.wait_closed(5)
        row.check("oversized message: close 1009", big.close_code == 1009,
                  f"close code {big.close_code}")

        async def half_ended() -> bool:
            return decode(await client.hget(redis_keys.session_record(half_id), "state")
                          or b"") == "ended"
        ended = await wait_async(half_ended, IDLE_S + 2 * KEEPALIVE_S + 5, 0.1)
        half_s = time.time() - t_half
        row.recovery_s = round(half_s, 2)
        row.check("half-open peer ended within its timeout", ended,
                  f"still {await client.hget(redis_keys.session_record(half_id), 'state')}")
        freed = await wait_for(lambda: len(rt.open_sessions) <= 1, 5)
        row.check("model sockets freed", freed, f"{len(rt.open_sessions)} model sockets open "
                  "with one media session left")
        half_ws.transport.abort()

        webhooks, loris, body_loris = await background
        await noisy.aclose()
        call = await sim.place_call(CallScript(caller_wav=None, reply_timeout_s=0.5,
                                                 max_duration_s=40))
        await call.wait_finished(45)
        alive_procs = stack.alive()
    row.calls = 4 + 1
    row.events += len(driver.records)
    row.lost = sum(1 for r in driver.records if r.status != 200)
    row.duplicated = None
    row.cut = 0 if call.end_reason == "caller_hangup" else 1
    latencies = sorted(r.done_at - r.sent_at for r in driver.records)
    row.notes.append(f"honest webhooks {driver.statuses()}, slowest {latencies[-1]:.2f} s; "
                     f"body dribblers got {[a[:12] for a in body_loris]}; "
                     f"half-open ended after {half_s:.1f} s")
    row.check("slowloris did not starve webhooks", row.lost == 0 and bool(webhooks is None),
              f"{driver.statuses()}")
    row.check("body dribblers got 408", all(a.startswith(b"HTTP/1.1 408") for a in body_loris),
              str([a[:20] for a in body_loris]))
    row.check("gateway still serves real calls", row.cut == 0 and "first_agent_audio"
              in call.timeline, f"{call.end_reason} {sorted(call.timeline)}")
    row.check("processes alive", all(alive_procs.values()), str(alive_procs))
    row.notes.append(f"{sum(1 for a in loris if a)} of {len(loris)} header dribblers "
                     "were answered before they gave up")

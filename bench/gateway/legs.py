"""Load generator: `calls` simulated Infobip media legs in one process (run by run.py).

Each leg speaks the Infobip media protocol exactly as `callbridge.simulators.infobip.MediaLeg` does
(docs/protocol-assumptions.md, "Infobip media WebSocket"): WebSocket handshake,
the `websocket:connected` text frame with the one-time token in its customData, then 20 ms
binary frames of 16-bit PCM on an absolute schedule, silence when the caller says nothing;
`{"action":"clear"}` is counted. But a leg here is an `asyncio.Protocol` around websockets'
Sans-I/O `ClientProtocol` (the same framing and masking code as the real client), with one
ticker per process sending every leg's due frames: no task, timer or coroutine per frame,
no numpy per received frame. `MediaLeg` costs about as much CPU per call as the gateway it
measures (a sleeping task per leg, awaits per frame, an RMS per frame), so with it the load
core saturated from 150 calls and the legs reported gaps that were their own (generator
loop lag p99 100+ ms); these legs cost a fraction of that, so the gaps are the gateway's.

Each caller says the order-status clip 2-4 s after connecting and again every 3-6 s, so
audio flows both ways and the agent is sometimes interrupted (barge-in).

Measured inside the window [start + warmup, start + warmup + seconds]: gaps between
received frames above LATE_GAP_MS (late), frames missing against real time (dropped),
and this process's own event-loop lag (if the generator is late, its gaps are its own).
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import secrets
import sys
import time

import orjson
import redis
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from callbridge.shared import event_loop, redis_keys
from callbridge.shared.infobip_media import FRAME_MS, build_connected, frame_bytes, is_clear
from callbridge.shared.pcm import read_wav, resample
from callbridge.shared.ws_close_codes import NORMAL_CLOSURE
from callbridge.simulators import ASSETS_DIR
from callbridge.simulators.infobip.media_leg import LATE_GAP_MS

FRAME_S = FRAME_MS / 1000.0
TICK_S = 0.005
#: A ticker that woke late sends at most this many of a leg's overdue frames at once.
MAX_CATCHUP = 10


class Speech:
    """The caller's clip cut into frames once per process, shared by every leg."""

    def __init__(self, pcm: bytes, rate: int) -> None:
        n = frame_bytes(rate)
        pcm += bytes((-len(pcm)) % n)
        self.frames = [pcm[i:i + n] for i in range(0, len(pcm), n)]
        self.silence = bytes(n)


class LeanLeg(asyncio.Protocol):
    """One media leg: handshake, `websocket:connected`, frames out on its grid, stats in."""

    window = (0.0, 0.0)  # loop time, set once per process

    def __init__(self, url: str, rate: int, custom_data: dict[str, str], speech: Speech,
                 rng: random.Random) -> None:
        self.proto = ClientProtocol(parse_uri(url), max_size=2**20)
        self.rate = rate
        self.custom_data = custom_data
        self.speech = speech
        self.rng = rng
        self.loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = self.loop.create_future()
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self.next_send = 0.0  # loop time of the next frame on this leg's grid
        self.speak_at = 0.0  # loop time the next utterance starts
        self.speech_pos = -1  # index into speech.frames, -1 when silent
        self.in_window = 0
        self.voiced = 0
        self.clears = 0
        self.late: list[float] = []
        self._last_rx: float | None = None

    # asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        request = self.proto.connect()
        request.headers["User-Agent"] = "Infobip-Sim"
        self.proto.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = self.loop.time()
        self.proto.receive_data(data)
        for event in self.proto.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.BINARY:
                    self._on_audio(event.data, now)
                elif event.opcode is Opcode.TEXT and is_clear(bytes(event.data)):
                    self.clears += 1
            elif isinstance(event, Response):
                self._on_handshake(now)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during handshake: {exc}"))

    # ------------------------------------------------------------------------------------

    def _on_handshake(self, now: float) -> None:
        if self.proto.handshake_exc is not None:
            if not self.opened.done():
                self.opened.set_exception(self.proto.handshake_exc)
            return
        self.proto.send_text(build_connected(self.rate, self.custom_data).encode())
        self.next_send = now
        self.speak_at = now + self.rng.uniform(2.0, 4.0)
        if not self.opened.done():
            self.opened.set_result(None)

    def _on_audio(self, frame: bytes | bytearray | memoryview, now: float) -> None:
        start, end = self.window
        last, self._last_rx = self._last_rx, now
        if not start <= now <= end:
            return
        self.in_window += 1
        if last is not None and last >= start:
            gap = (now - last) * 1000.0
            if gap > LATE_GAP_MS:
                self.late.append(round(gap, 1))
        if frame != self.speech.silence:
            self.voiced += 1

    def send_due(self, now: float) -> None:
        """Send the frames whose slot on this leg's 20 ms grid has come (the ticker's job)."""
        if self.proto.state is not State.OPEN:
            return
        sent = 0
        while self.next_send <= now and sent < MAX_CATCHUP:
            self.proto.send_binary(self._next_frame(self.next_send))
            self.next_send += FRAME_S
            sent += 1
        if sent:
            self._flush()
        if self.next_send <= now:  # a stall longer than the catch-up: keep real time
            self.next_send = now + FRAME_S

    def _next_frame(self, slot: float) -> bytes:
        frames = self.speech.frames
        if self.speech_pos < 0 and slot >= self.speak_at:
            self.speech_pos = 0
        if self.speech_pos < 0:
            return self.speech.silence
        frame = frames[self.speech_pos]
        self.speech_pos += 1
        if self.speech_pos >= len(frames):
            self.speech_pos = -1
            self.speak_at = slot + self.rng.uniform(3.0, 6.0)
        return frame

    def close(self) -> None:
        if self.proto.state is State.OPEN:
            self.proto.send_close(NORMAL_CLOSURE, "caller hangup")
            self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.proto.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()


async def _ticker(legs: list[LeanLeg], end: float) -> None:
    """One timer for every leg of the process: at each tick, send what is due."""
    loop = asyncio.get_running_loop()
    wake = loop.time()
    for _ in range(10_000_000):  # bounded; ends with the run
        now = loop.time()
        if now >= end:
            return
        for leg in legs:
            leg.send_due(now)
        wake = max(wake + TICK_S, now)
        await asyncio.sleep(wake - loop.time())


async def _lag_probe(end: float, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(1_000_000):
        if loop.time() >= end:
            return
        t = loop.time()
        await asyncio.sleep(0.01)
        lags.append((loop.time() - t - 0.01) * 1000.0)


async def run(args: argparse.Namespace) -> dict[str, object]:
    # The instrument must not stall: one 47 ms gen-2 collection in a generator process
    # showed as 17 "late" frames at 100 calls (every leg of that process saw the gap at
    # once). A generator lives for one level and makes almost no reference cycles.
    gc.disable()
    loop = asyncio.get_running_loop()
    r = redis.Redis.from_url(args.redis)
    pcm, src = read_wav(ASSETS_DIR / "caller_order_status.wav")
    speech = Speech(resample(pcm, src, args.rate), args.rate)
    uri = parse_uri(args.url)
    host, port = uri.host, uri.port
    start = loop.time() + (args.start_at - time.time())  # unix -> loop time
    window = (start + args.ramp + args.warmup, start + args.ramp + args.warmup + args.seconds)
    LeanLeg.window = window
    end = window[1] + 0.5
    legs: list[LeanLeg] = []
    rng = random.Random(args.seed)
    failed = 0
    lags: list[float] = []
    probe = asyncio.create_task(_lag_probe(window[1], lags))
    ticker = asyncio.create_task(_ticker(legs, end))
    for i in range(args.calls):
        await asyncio.sleep(max(0.0, start + args.ramp * i / max(1, args.calls) - loop.time()))
        call_id = f"bench-{args.seed}-{i}-{secrets.token_hex(3)}"
        token = secrets.token_urlsafe(24)
        r.set(redis_keys.media_token(token), orjson.dumps(
            {"call_id": call_id, "profile": "default", "expires_at": time.time() + 120}), ex=120)
        leg = LeanLeg(args.url, args.rate, {"cbToken": token, "cbCallId": call_id}, speech,
                      random.Random(rng.random()))
        try:
            await loop.create_connection(lambda leg=leg: leg, host, port)  # type: ignore[misc]
            await asyncio.wait_for(leg.opened, 10.0)
        except Exception as exc:  # counted: a refused or failed connection
            failed += 1
            print(f"leg {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        legs.append(leg)
    await ticker
    await probe
    window_s = window[1] - window[0]
    expected = int(window_s * 1000 / FRAME_MS)
    result: dict[str, object] = {
        "calls": len(legs), "failed": failed,
        "closed_early": sum(1 for leg in legs if leg.closed),
        "late": sum(len(leg.late) for leg in legs),
        "max_gap_ms": max((g for leg in legs for g in leg.late), default=0.0),
        "dropped": sum(max(0, expected - 2 - leg.in_window) for leg in legs),
        "frames": sum(leg.in_window for leg in legs),
        "voiced": sum(leg.voiced for leg in legs),
        "clears": sum(leg.clears for leg in legs),
        "gen_lag_p99_ms": sorted(lags)[int(len(lags) * 0.99)] if lags else 0.0,
        "gen_lag_max_ms": max(lags, default=0.0),
    }
    for leg in legs:
        leg.close()
    for _ in range(60):  # bounded: the gateway answers each close, then drops the TCP
        if all(leg.closed for leg in legs):
            break
        await asyncio.sleep(0.05)
    r.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--rate", type=int, default=24000)
    parser.add_argument("--start-at", type=float, required=True, help="unix time")
    parser.add_argument("--ramp", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = event_loop.run(run(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

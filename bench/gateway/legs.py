"""Load generator: `calls` simulated Infobip media legs in one process (run by run.py).

Each leg is a `simulators.infobip.MediaLeg` (the real Infobip side: `websocket:connected`
with a one-time token, 20 ms frames on an absolute schedule, `clear` honoured) that keeps
only statistics instead of every frame, so hundreds of legs stay small. Each caller says
the order-status clip a few seconds after the greeting and again every few seconds, so
audio flows both ways and the agent is sometimes interrupted (barge-in).

Measured inside the window [start + warmup, start + warmup + seconds]: gaps between
received frames above LATE_GAP_MS (late), frames missing against real time (dropped),
and this process's own event-loop lag (if the generator is late, its gaps are its own).
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sys
import time

import orjson
import redis

from shared import redis_keys
from shared.pcm import is_silent, read_wav, resample
from simulators import ASSETS_DIR
from simulators.infobip import MediaLeg
from simulators.infobip.media_leg import LATE_GAP_MS


class StatsLeg(MediaLeg):
    """A MediaLeg that counts instead of storing frames (bounded memory)."""

    window = (0.0, 0.0)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.in_window = 0
        self.voiced = 0
        self.late: list[float] = []
        self._last_t: float | None = None

    def _on_audio(self, frame: bytes, now: float) -> None:  # overrides the recorder
        start, end = self.window
        last, self._last_t = self._last_t, now
        if not start <= now <= end:
            return
        self.in_window += 1
        if last is not None and last >= start:
            gap = (now - last) * 1000.0
            if gap > LATE_GAP_MS:
                self.late.append(round(gap, 1))
        if not is_silent(frame):
            self.voiced += 1


async def _caller(leg: StatsLeg, speech: bytes, end: float, rng: random.Random) -> None:
    await asyncio.sleep(rng.uniform(2.0, 4.0))
    for _ in range(100):  # bounded; ends with the run
        if time.time() >= end or leg.closed:
            return
        await leg.play(speech)
        await asyncio.sleep(rng.uniform(3.0, 6.0))


async def _lag_probe(end: float, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(1_000_000):
        if time.time() >= end:
            return
        t = loop.time()
        await asyncio.sleep(0.01)
        lags.append((loop.time() - t - 0.01) * 1000.0)


async def run(args: argparse.Namespace) -> dict[str, object]:
    r = redis.Redis.from_url(args.redis)
    pcm, src = read_wav(ASSETS_DIR / "caller_order_status.wav")
    speech = resample(pcm, src, args.rate)
    start = args.start_at
    window = (start + args.ramp + args.warmup, start + args.ramp + args.warmup + args.seconds)
    StatsLeg.window = window
    end = window[1] + 0.5
    legs: list[StatsLeg] = []
    tasks: list[asyncio.Task[None]] = []
    rng = random.Random(args.seed)
    failed = 0
    lags: list[float] = []
    probe = asyncio.create_task(_lag_probe(window[1], lags))
    await asyncio.sleep(max(0.0, start - time.time()))
    for i in range(args.calls):
        await asyncio.sleep(max(0.0, start + args.ramp * i / max(1, args.calls) - time.time()))
        call_id = f"bench-{args.seed}-{i}-{secrets.token_hex(3)}"
        token = secrets.token_urlsafe(24)
        r.set(redis_keys.media_token(token), orjson.dumps(
            {"call_id": call_id, "profile": "default", "expires_at": time.time() + 120}), ex=120)
        leg = StatsLeg(args.url, args.rate, {"cbToken": token, "cbCallId": call_id},
                       autoplay=False, open_timeout=10)
        try:
            await leg.connect()
        except Exception as exc:  # counted: a refused or failed connection
            failed += 1
            print(f"leg {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        legs.append(leg)
        tasks.append(asyncio.create_task(_caller(leg, speech, end, rng)))
    await asyncio.sleep(max(0.0, end - time.time()))
    for task in tasks:
        task.cancel()
    await probe
    window_s = window[1] - window[0]
    expected = int(window_s * 50)
    closed_early = sum(1 for leg in legs if leg.closed)
    result = {
        "calls": len(legs), "failed": failed, "closed_early": closed_early,
        "late": sum(len(leg.late) for leg in legs),
        "max_gap_ms": max((g for leg in legs for g in leg.late), default=0.0),
        "dropped": sum(max(0, expected - 2 - leg.in_window) for leg in legs),
        "frames": sum(leg.in_window for leg in legs),
        "voiced": sum(leg.voiced for leg in legs),
        "gen_lag_p99_ms": sorted(lags)[int(len(lags) * 0.99)] if lags else 0.0,
    }
    await asyncio.gather(*(leg.aclose() for leg in legs), return_exceptions=True)
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
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Traffic the scenarios drive: webhooks at a steady bounded rate, calls, raw media legs.

Every loop here is bounded in count and in time; everything targets 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import orjson
import redis.asyncio as aioredis

from bench.faults.stack import webhook_headers
from callbridge.shared import redis_keys
from callbridge.shared.media_tokens import MediaTokenRecord
from callbridge.simulators import ASSETS_DIR
from callbridge.simulators.infobip import CallScript, InfobipSimulator, MediaLeg, SimCall

CALLER_WAV = ASSETS_DIR / "caller_order_status.wav"


async def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll a cheap in-memory predicate (bounded); False on timeout, never raises."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def wait_async(check: Callable[[], Awaitable[bool]], timeout: float,
                     every: float = 0.2) -> bool:
    """Poll an async check (a Redis read, a URL) until true, bounded; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await check():
                return True
        except Exception:  # the thing polled may be down on purpose (that is the fault)
            pass
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)


@dataclass
class Sent:
    """One webhook: the id it carried, when it left and came back, and the answer."""

    key: str
    sent_at: float
    done_at: float = 0.0
    status: int = 0  # 0: connection error or client timeout


def probe_body(key: str, kind: str = "LOAD_PROBE") -> bytes:
    """A harmless event type the ingress stores and the orchestrator ignores."""
    return orjson.dumps({"type": kind, "callId": key,
                         "timestamp": "2026-01-15T12:00:00.000+0000", "properties": {}})


@dataclass
class WebhookDriver:
    """Posts probe webhooks at `rate`/s (bounded concurrency) until stopped or `limit`."""

    url: str
    rate: float
    concurrency: int = 16
    timeout_s: float = 5.0
    records: list[Sent] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def run(self, limit: int, max_s: float) -> None:
        sem = asyncio.Semaphore(self.concurrency)
        period = 1.0 / self.rate
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as http:
            for k in range(limit):
                if self._stop.is_set() or loop.time() - t0 > max_s:
                    break
                delay = t0 + k * period - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await sem.acquire()
                task = asyncio.create_task(self._one(http, sem))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout_s + 5)

    async def _one(self, http: aiohttp.ClientSession, sem: asyncio.Semaphore) -> None:
        rec = Sent(f"probe-{uuid.uuid4()}", time.time())
        self.records.append(rec)
        body = probe_body(rec.key)
        try:
            async with http.post(self.url, data=body, headers=webhook_headers(body)) as resp:
                await resp.read()
                rec.status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            rec.status = 0
        finally:
            rec.done_at = time.time()
            sem.release()

    def statuses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[str(r.status)] = out.get(str(r.status), 0) + 1
        return out

    @property
    def acked(self) -> list[Sent]:
        return [r for r in self.records if r.status == 200]


async def post_raw(http: aiohttp.ClientSession, url: str, body: bytes,
                   headers: dict[str, str] | None = None) -> int:
    """One signed webhook post; the status, or 0 on a connection error."""
    try:
        async with http.post(url, data=body, headers=headers or webhook_headers(body)) as resp:
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0


async def stream_ids(client: aioredis.Redis, stream: str = redis_keys.EVENTS_STREAM,
                     batch: int = 5000, limit: int = 2_000_000) -> list[str]:
    """The call_id field of every entry of a stream (paged XRANGE, bounded)."""
    out: list[str] = []
    start = "-"
    while len(out) < limit:
        entries = await client.xrange(stream, min=start, max="+", count=batch)
        if not entries:
            break
        for _entry_id, fields in entries:
            value = fields.get(b"call_id", b"")
            out.append(value.decode() if isinstance(value, bytes) else str(value))
        last = entries[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else str(last))
        if len(entries) < batch:
            break
    return out


# Calls -------------------------------------------------------------------------------------

def script(hangup_after_s: float | None = None, **kw: object) -> CallScript:
    return CallScript(caller_wav=CALLER_WAV, hangup_after_s=hangup_after_s,
                      **kw)  # type: ignore[arg-type]


async def place_calls(sim: InfobipSimulator, n: int, make: Callable[[], CallScript],
                      rate: float = 5.0) -> list[SimCall]:
    """`n` calls at a steady `rate` per second."""
    calls = []
    for i in range(n):
        if i:
            await asyncio.sleep(1.0 / rate)  # the pacing of a steady arrival rate
        calls.append(await sim.place_call(make()))
    return calls


async def finish_all(calls: list[SimCall], timeout: float) -> list[str]:
    """Wait (bounded) for every call to end; for each that did not, where it stuck (its
    state, dialog and timeline), so a failed scenario says more than a count."""
    results = await asyncio.gather(*(c.wait_finished(timeout) for c in calls),
                                   return_exceptions=True)
    return [str(r) or f"call {c.call_id}: {type(r).__name__}"
            for c, r in zip(calls, results, strict=True) if r is not True]


def dialogs_of(sim: InfobipSimulator, call_id: str) -> int:
    """Dialogs the Calls API simulator created for a caller (REST requests that succeeded)."""
    call = sim.call(call_id)
    return len(call.dialogs) if call is not None else 0


# Raw media legs (the Infobip side without the Calls API) ---------------------------------

async def issue_token(client: aioredis.Redis, call_id: str, ttl_s: int = 120) -> str:
    """A one-time media token exactly as the orchestrator stores it (contract "Media token"):
    lets the suite open media legs to a gateway without a Calls API dialog."""
    token = secrets.token_urlsafe(24)
    record = MediaTokenRecord.mint(call_id, "default", ttl_s)
    await client.set(redis_keys.media_token(token), record.to_json(), ex=ttl_s)
    return token


async def open_leg(client: aioredis.Redis, url: str, rate: int = 16000,
                   speech: bool = False) -> tuple[MediaLeg, str]:
    """A connected MediaLeg with a valid token; streams silence (or the caller's speech)."""
    from callbridge.shared.pcm import read_wav, resample

    call_id = f"fault-leg-{uuid.uuid4()}"
    token = await issue_token(client, call_id)
    pcm = b""
    if speech:
        raw, wav_rate = read_wav(CALLER_WAV)
        pcm = resample(raw, wav_rate, rate)
    leg = MediaLeg(url, rate, {"cbToken": token, "cbCallId": call_id, "cbProfile": "default"},
                   caller_pcm=pcm)
    await leg.connect()
    return leg, call_id

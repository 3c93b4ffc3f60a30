"""A lean HTTP/1.1 keep-alive load generator (raw asyncio Protocol, uvloop when present).

Why not aiohttp's client: its per-request overhead would make the generator, not the server,
the bottleneck on a 2-core box. Each connection has at most one request in flight (no
pipelining), like wrk.

Modes:
- saturation (`--rate 0`): every connection sends its next request as soon as the previous
  answer arrived; throughput = completed / elapsed.
- fixed rate (`--rate R`): connection i sends its k-th request at start + (i + k*C)/R; latency
  is measured from that *intended* time, so a slow server cannot hide queueing from us
  (no coordinated omission, as wrk2). Timer granularity (~1 ms) is included in it.

Every request is a CALL_RECEIVED with a fresh callId. Only 127.0.0.1 is ever targeted.
Prints one JSON object: completed, statuses, errors, elapsed_s, cpu_util, latencies_us (sorted
sample, at most 200k values).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time

HOST = "127.0.0.1"
BODY = (
    '{"type":"CALL_RECEIVED","callId":"%s","timestamp":"2026-01-15T12:00:00.000+0000",'
    '"callsConfigurationId":"cfg-bench","platform":{"applicationId":"app-bench"},'
    '"properties":{"call":{"id":"%s","endpoint":{"type":"PHONE","phoneNumber":"41793026727"},'
    '"from":"41793026727","to":"41793026731","direction":"INBOUND","state":"CALLING",'
    '"callsConfigurationId":"cfg-bench"},"apiBaseUrl":"http://127.0.0.1:8070"}}'
)
MAX_SAMPLES = 200_000


class _Conn(asyncio.Protocol):
    """One keep-alive connection; `request()` resolves with the response status."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        length = 0
        at = head.find(b"content-length:")
        if at >= 0:
            eol = head.find(b"\r\n", at)
            length = int(head[at + 15: eol if eol >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buf) < total:
            return
        status = int(self.buf[9:12])
        del self.buf[:total]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def request(self, payload: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self.waiter


def _payload(path: str, call_id: str) -> bytes:
    body = (BODY % (call_id, call_id)).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _run(port: int, path: str, connections: int, duration: float, rate: float,
               warmup: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    conns: list[_Conn] = []
    for _ in range(connections):
        _, proto = await loop.create_connection(_Conn, HOST, port)
        conns.append(proto)
    prefix = f"{os.getpid():x}{random.randrange(1 << 20):05x}"
    counter = 0
    latencies: list[int] = []
    statuses: dict[int, int] = {}
    errors = 0
    t0 = time.perf_counter()
    measure_from = t0 + warmup
    end = measure_from + duration

    async def worker(index: int, conn: _Conn) -> None:
        nonlocal counter, errors
        k = 0
        interval = connections / rate if rate > 0 else 0.0
        offset = index / rate if rate > 0 else 0.0
        # Bounded: at most duration*(rate or 200k)/connections requests per connection.
        budget = int((warmup + duration) * (rate or 200_000) / connections) + 10
        for _ in range(budget):
            if rate > 0:
                intended = t0 + offset + k * interval
                k += 1
                if intended >= end:
                    return
                delay = intended - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                intended = time.perf_counter()
                if intended >= end:
                    return
            counter += 1
            try:
                status = await asyncio.wait_for(
                    conn.request(_payload(path, f"{prefix}-{counter:09d}")), 30)
            except (ConnectionError, TimeoutError):
                errors += 1
                return
            done = time.perf_counter()
            if intended >= measure_from:
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(int((done - intended) * 1e6))

    cpu0 = time.process_time()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    elapsed = min(time.perf_counter(), end + 30) - measure_from
    cpu = time.process_time() - cpu0
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    completed = len(latencies)
    if completed > MAX_SAMPLES:
        latencies = random.sample(latencies, MAX_SAMPLES)
    latencies.sort()
    return {"completed": completed, "statuses": statuses, "errors": errors,
            "elapsed_s": elapsed, "cpu_util": cpu / max(1e-9, time.perf_counter() - t0),
            "latencies_us": latencies}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/webhook")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=0.0, help="req/s; 0 = saturation")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    runner_kwargs = {}
    if not args.no_uvloop:
        try:
            import uvloop

            runner_kwargs["loop_factory"] = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(**runner_kwargs) as runner:  # type: ignore[arg-type]
        result = runner.run(_run(args.port, args.path, args.connections, args.duration,
                                 args.rate, args.warmup))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

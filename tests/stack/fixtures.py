"""Helpers for tests that drive a whole `LocalStack`: bounded waits, LB state, webhook load."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import orjson


async def lb_server_status(stats_port: int, backend: str, server: str) -> str:
    """HAProxy's view of one server (UP, DOWN, MAINT, ...) from its stats CSV."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{stats_port}/stats;csv") as resp:
            text = (await resp.text()).lstrip("# ")
    for row in csv.DictReader(io.StringIO(text)):
        if row["pxname"] == backend and row["svname"] == server:
            return row["status"]
    raise AssertionError(f"{backend}/{server} not in HAProxy stats")


async def wait_lb_status(stats_port: int, backend: str, server: str, prefix: str,
                         timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = await lb_server_status(stats_port, backend, server)
        if status.startswith(prefix):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{backend}/{server} is {status}, expected {prefix}")
        await asyncio.sleep(0.1)


@dataclass
class WebhookLoad:
    """Posts harmless webhooks (an event type the system stores and ignores) and records
    which were acknowledged with 200."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)  # e.g. the stack's Authorization
    acked: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    sent: int = 0

    async def run(self, total: int, concurrency: int = 8, timeout_s: float = 60) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(total):
            queue.put_nowait(i)
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async def worker() -> None:
                while not queue.empty() and time.monotonic() < deadline:
                    queue.get_nowait()
                    call_id = f"load-{uuid.uuid4()}"
                    body = orjson.dumps({"type": "LOAD_PROBE", "callId": call_id,
                                         "timestamp": "2026-01-15T12:00:00.000+0000",
                                         "properties": {}})
                    self.sent += 1
                    try:
                        async with http.post(self.url, data=body, headers={
                                "Content-Type": "application/json", **self.headers}) as resp:
                            status = resp.status
                    except (aiohttp.ClientError, TimeoutError):
                        status = 0
                    key = str(status)
                    self.statuses[key] = self.statuses.get(key, 0) + 1
                    if status == 200:
                        self.acked.append(call_id)
            await asyncio.gather(*(worker() for _ in range(concurrency)))

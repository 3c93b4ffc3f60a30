"""A slowloris client: a request head sent one byte every 100 ms, never finished.

Shared by the edge attack scenario (12c) and the ingress and HAProxy tests: each asks how
long the server on the other side kept such a client, and what it answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


async def dribble_request_head(port: int, limit_s: float, source: str | None = None
                               ) -> tuple[float, bytes]:
    """Dribble a `POST /webhook` head to 127.0.0.1:`port` (from `source`, an address on the
    loopback, when given) until the peer answers or closes, at most `limit_s`.

    Returns (seconds until then, what it answered): b"" with seconds < `limit_s` means it
    closed without a word; seconds >= `limit_s` means it kept the client the whole time."""
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
    writer.write(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    answer = b""
    try:
        while time.monotonic() - started < limit_s:
            try:
                writer.write(b"X")
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(200), 0.1)
            except TimeoutError:
                continue
            except (ConnectionError, OSError):
                answer = b""
            break  # an answer, or EOF (b""): either way the server has acted
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return time.monotonic() - started, answer

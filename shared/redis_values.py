"""How values look in Redis, written and read the same way by every service.

redis-py hands back bytes (the clients here do not decode: audio and event bodies are bytes);
times are Unix epoch milliseconds; a process is named `hostname-pid` in consumer groups,
the gateway set and heartbeats.
"""

from __future__ import annotations

import os
import socket
import time


def as_text(value: object) -> str:
    """A Redis reply as text: bytes decoded (bad UTF-8 replaced), None as "", else str()."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def as_text_hash(mapping: dict[bytes, bytes] | dict[str, str]) -> dict[str, str]:
    """An HGETALL reply with its keys and values as text."""
    return {as_text(k): as_text(v) for k, v in mapping.items()}


def epoch_ms() -> int:
    """Now, in Unix epoch milliseconds."""
    return int(time.time() * 1000)


def epoch_ms_text() -> str:
    """Now, in Unix epoch milliseconds as a decimal string (the call and session records)."""
    return str(epoch_ms())


def process_name() -> str:
    """`hostname-pid`: this process's default name in Redis (consumer, gateway id)."""
    return f"{socket.gethostname()}-{os.getpid()}"

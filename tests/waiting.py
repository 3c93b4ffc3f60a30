"""The one bounded wait the tests use instead of sleeps: poll a condition until it holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_until(cond: Callable[[], Any] | Callable[[], Awaitable[Any]],
                     timeout: float = 10.0, what: str = "condition",
                     interval: float = 0.02) -> Any:
    """Poll `cond` (sync or async) until truthy, for at most `timeout` s; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)

"""Stop a supervisor cleanly on SIGINT, SIGTERM or SIGHUP alike.

`timeout`, systemd and terminal hang-ups send SIGTERM/SIGHUP, not Ctrl-C: without this, the
Python process dies and its child services are orphaned (seen in practice). Cancelling the
main task lets every `async with LocalStack` unwind and stop its children.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def cancel_on_signals(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro`; a stop signal cancels it (raising CancelledError once it has unwound)."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)

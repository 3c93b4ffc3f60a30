"""The process-wide gate every frame to a caller passes: closed while this process may have
been stopped since the pacer's last tick, until the server knows which calls are still its
own (pacer.py, "A stopped process"; fencing.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from callbridge.services.media_gateway import metrics

log = logging.getLogger(__name__)

#: A gap in the hub's ticks longer than this holds every send until fences are checked.
STALL_HOLD_S = 0.5


class SendGate:
    """Open unless the process may have been stopped since the hub's last tick (module
    docstring). Shared by the hub and every `Sender`; `on_stall(gap)` is told once per hold."""

    __slots__ = ("_opened", "held", "last_tick", "on_stall")

    def __init__(self) -> None:
        self.held = False
        self.last_tick = float("inf")  # no tick yet: nothing to compare with
        self.on_stall: Callable[[float], None] | None = None
        self._opened = asyncio.Event()
        self._opened.set()

    def allows(self, now: float) -> bool:
        if self.held:
            return False
        gap = now - self.last_tick
        if gap > STALL_HOLD_S:
            self.held = True
            self._opened.clear()
            metrics.STALLS.inc()
            log.warning("no pacer tick for %.2f s (stopped or starved): holding every call's "
                        "audio until its fence is checked", gap)
            if self.on_stall is not None:
                self.on_stall(gap)
            return False
        return True

    def release(self) -> None:
        self.held = False
        self._opened.set()

    async def wait_open(self) -> None:
        await self._opened.wait()

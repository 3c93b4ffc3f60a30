"""Run an entry point on uvloop when it is installed, on asyncio's own loop otherwise.

Every process that carries audio or load (gateway, ingress, simulators, benchmark
generators) runs on uvloop: measured cheaper per socket operation (perf-notes). uvloop is an
optional dependency, so one place decides the fallback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def loop_factory(use_uvloop: bool = True) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None (asyncio's default) when off or not installed."""
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        log.info("uvloop not installed; using asyncio's default loop")
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """`asyncio.run(main)` on uvloop when installed."""
    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        return runner.run(main)

"""Garbage-collector pauses, timed and counted.

A collection stops the event loop, and with it every call's audio at once: a gen-2 pass over
a large heap takes tens of ms (bench/gateway measured 19-62 ms in our processes), enough
for every caller to hear a gap. The gateway freezes its start-up objects (`gc.freeze()` in
`run_gateway`) and its hot path allocates little the collector tracks, so long pauses
should be rare; when one happens, the histogram and a warning say so, instead of a
mysterious burst of late frames on every call.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from callbridge.services.media_gateway import metrics

log = logging.getLogger(__name__)

#: A pause this long is logged: two 20 ms frames' worth of silence is audible.
WARN_AFTER_S = 0.04

_started: list[float] = [0.0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    pause = time.perf_counter() - _started[0]
    generation = info.get("generation", 0)
    metrics.GC_PAUSE.labels(str(generation)).observe(pause)
    if pause >= WARN_AFTER_S:
        log.warning("garbage collection (generation %s) paused every call for %.0f ms",
                    generation, pause * 1000)


def install() -> None:
    """Time every collection of this process (idempotent)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)

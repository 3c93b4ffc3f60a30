"""A call's two clocks: no caller audio for GATEWAY_IDLE_TIMEOUT_S, and GATEWAY_MAX_CALL_DURATION_S.

Infobip streams frames continuously, silence included (docs/protocol-assumptions.md,
"Continuous inbound audio during the caller's silence"), so a call without caller frames
for GATEWAY_IDLE_TIMEOUT_S is a dead or half-open peer that cannot hear anything (0 switches the
check off). What the session does about either is its ending sequence (session.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from callbridge.services.media_gateway.config import GatewaySettings
from callbridge.services.media_gateway.relay import Relay

log = logging.getLogger(__name__)

IDLE_TIMEOUT = "idle_timeout"
MAX_DURATION = "max_duration"


async def watchdog(settings: GatewaySettings, relay: Relay, connected_at: float,
                   ending: Callable[[], bool]) -> str | None:
    """Check periodically; IDLE_TIMEOUT or MAX_DURATION when the call must end, None when
    it began ending for another reason first."""
    s = settings
    loop = asyncio.get_running_loop()
    # 0: no idle check
    idle = s.gateway_idle_timeout_s if s.gateway_idle_timeout_s > 0 else float("inf")
    step = max(0.05, min(1.0, idle / 4, s.gateway_max_call_duration_s / 4))
    for _ in range(int((s.gateway_max_call_duration_s + s.gateway_idle_timeout_s) / step) + 10):
        await asyncio.sleep(step)  # a periodic check, not synchronisation
        now = loop.time()
        if ending():
            return None
        if now - relay.last_audio_in >= idle:
            log.warning("no caller audio for %.1f s: ending the call", s.gateway_idle_timeout_s)
            return IDLE_TIMEOUT
        if now - connected_at >= s.gateway_max_call_duration_s:
            log.info("maximum call duration reached")
            return MAX_DURATION
    return None

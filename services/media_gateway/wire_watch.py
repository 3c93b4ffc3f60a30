"""What Infobip's side of one media socket does, seen from the gateway, and its keepalive.

Several facts about the media WebSocket are not published (docs/protocol-assumptions.md):
where the media token sits in `websocket:connected`, whether inbound audio continues during
the caller's silence, whether pings are answered, whether `{"action": "clear"}` is
acknowledged. Each call fills a `WireObservation` (counters and key names, never values or
audio); while `callbridge preflight --capture-call` has armed the gateways
(`redis_keys.PREFLIGHT_ARMED`), the observation is appended to the preflight stream when the
call ends, so the first live call shows which assumptions held.

The keepalive is ours rather than websockets' built-in one so that the pings and pongs can
be counted, and so that it can be switched off (GATEWAY_KEEPALIVE_INTERVAL_S=0) if Infobip turns
out not to answer pings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from callbridge.shared import ws_close_codes as close
from callbridge.shared.infobip_media import (
    CONNECTED_EVENT,
    DTMF_EVENT,
    MAX_CUSTOM_KEY_CHARS,
    TOKEN_KEY,
    Connected,
    Dtmf,
    UnknownControl,
)
from callbridge.shared.wire_observations import (
    CLEAR_ACK_WINDOW_S,
    INBOUND_GAP_MS,
    MAX_TALLY_ENTRIES,
    OTHER,
    WireObservation,
    tally,
)

log = logging.getLogger(__name__)

#: Close code and reason when a ping goes unanswered (as websockets' own keepalive does).
KEEPALIVE_CLOSE_CODE = close.INTERNAL_ERROR
KEEPALIVE_CLOSE_REASON = "keepalive ping timeout"


def control_name(control: object) -> str:
    """A short name for a text frame received inside a call: its `event`, else
    `action:<action>`, else its JSON type; bounded, for tallies and logs."""
    if isinstance(control, UnknownControl):
        event, action = control.raw.get("event"), control.raw.get("action")
        if isinstance(event, str):
            return event[:MAX_CUSTOM_KEY_CHARS]
        if isinstance(action, str):
            return f"action:{action[:MAX_CUSTOM_KEY_CHARS]}"
        return "unnamed"
    if isinstance(control, Dtmf):
        return DTMF_EVENT
    return CONNECTED_EVENT if isinstance(control, Connected) else type(control).__name__


class WireWatch:
    """One call's wire observation. `on_frame` runs once per inbound audio frame, so it is
    a handful of arithmetic operations and one dict update."""

    __slots__ = ("_frame_sizes", "_last_clear", "_last_frame", "obs")

    def __init__(self, call_id: str, gateway_id: str) -> None:
        self.obs = WireObservation(call_id=call_id, gateway_id=gateway_id,
                                   started_at_ms=int(time.time() * 1000))
        self._last_frame: float | None = None
        self._last_clear: float | None = None
        self._frame_sizes: dict[int, int] = {}

    def on_connected(self, control: Connected) -> None:
        shape = self.obs.connected
        shape.keys = list(control.key_names)
        shape.custom_data_keys = (list(control.nested_key_names)
                                  if control.nested_key_names is not None else None)
        shape.token_location = control.location(TOKEN_KEY)
        shape.content_type = control.content_type[:MAX_CUSTOM_KEY_CHARS]

    def on_frame(self, size: int, now: float) -> None:
        inbound = self.obs.inbound
        inbound.frames += 1
        inbound.bytes += size
        last, self._last_frame = self._last_frame, now
        if last is not None:
            gap_ms = (now - last) * 1000.0
            if gap_ms > inbound.max_gap_ms:
                inbound.max_gap_ms = gap_ms
            if gap_ms > INBOUND_GAP_MS:
                inbound.gaps_over_threshold += 1
        sizes = self._frame_sizes
        count = sizes.get(size)
        if count is None and len(sizes) >= MAX_TALLY_ENTRIES - 1:
            size = -1  # OTHER
            count = sizes.get(size)
        sizes[size] = (count or 0) + 1

    def on_clear_sent(self, now: float) -> None:
        self.obs.clear.sent += 1
        self._last_clear = now

    def on_control(self, name: str, now: float) -> None:
        tally(self.obs.control_events, name)
        if self._last_clear is not None and now - self._last_clear <= CLEAR_ACK_WINDOW_S:
            tally(self.obs.clear.replies, name)

    def on_ping(self) -> None:
        self.obs.keepalive.pings_sent += 1

    def on_pong(self, rtt_s: float) -> None:
        keepalive = self.obs.keepalive
        keepalive.pongs_received += 1
        rtt_ms = rtt_s * 1000.0
        if keepalive.max_rtt_ms is None or rtt_ms > keepalive.max_rtt_ms:
            keepalive.max_rtt_ms = round(rtt_ms, 1)

    def finish(self, end_reason: str) -> WireObservation:
        obs = self.obs
        obs.ended_at_ms = int(time.time() * 1000)
        obs.end_reason = end_reason
        obs.inbound.max_gap_ms = round(obs.inbound.max_gap_ms, 1)
        obs.inbound.frame_sizes = {(OTHER if size < 0 else str(size)): count
                                   for size, count in self._frame_sizes.items()}
        return obs


async def keepalive(conn: Connection, interval_s: float, timeout_s: float, watch: WireWatch,
                    on_dead: Callable[[], None]) -> None:
    """Ping every `interval_s`; if a pong does not come within `timeout_s`, call `on_dead`
    (the session ends the call and closes the socket). Returns when the socket closes."""
    while True:
        await asyncio.sleep(interval_s)  # the ping period, not a wait for another task
        try:
            pong = await conn.ping()
        except ConnectionClosed:
            return
        watch.on_ping()
        try:
            async with asyncio.timeout(timeout_s):
                rtt = await pong
        except TimeoutError:
            log.warning("no pong within %.1f s of a ping: the media peer is gone", timeout_s)
            on_dead()
            return
        except ConnectionClosed:
            return
        watch.on_pong(rtt)

"""The caller's text frames inside a call: DTMF, and whatever else Infobip may send.

Nothing here ends the call: the media protocol has no control message that does (README
"Protocol decisions"). Malformed or unknown messages are counted and the first
CONTROL_LOG_LIMIT of a call logged (a peer must not be able to fill the logs); every one is
tallied on the call's wire observation (docs/protocol-assumptions.md).

DTMF is the one caller input that becomes *text* in the model's conversation, so it is
the prompt-injection door: only a single keypad key (`callbridge.shared.infobip_media.DTMF_DIGITS`)
ever reaches the model, through a fixed sentence, at most GATEWAY_DTMF_MAX_PER_S a second per
call; anything else is dropped and counted (`callbridge_gateway_caller_limited_total`).
"""

from __future__ import annotations

import logging

from callbridge.services.media_gateway import metrics
from callbridge.services.media_gateway.limits import TokenBucket
from callbridge.services.media_gateway.metrics import Limited
from callbridge.services.media_gateway.model_link import ModelLink
from callbridge.services.media_gateway.state import CallRecord
from callbridge.services.media_gateway.turns import ResponseTurns
from callbridge.services.media_gateway.wire_watch import WireWatch, control_name
from callbridge.shared import realtime_events as rt
from callbridge.shared.infobip_media import (
    DTMF_EVENT,
    Dtmf,
    InvalidDtmf,
    MediaProtocolError,
    UnknownControl,
    parse_control,
)

log = logging.getLogger(__name__)

#: Malformed or unknown control messages logged per call; past that they are only counted.
CONTROL_LOG_LIMIT = 5


class CallerControl:
    """One call's in-call text frames (see module docstring)."""

    def __init__(self, link: ModelLink, turns: ResponseTurns, record: CallRecord,
                 wire: WireWatch, dtmf_max_per_s: float, now: float) -> None:
        self.link = link
        self.turns = turns
        self.record = record
        self.wire = wire
        self.dtmf_bucket = TokenBucket(dtmf_max_per_s, dtmf_max_per_s, now)
        self.malformed = 0  # text frames that were not a valid control message
        self.notes = 0  # malformed/unknown control messages logged so far

    def on_text(self, text: str, now: float) -> None:
        """One text frame received at `now` (loop time)."""
        try:
            control = parse_control(text)
        except InvalidDtmf as exc:
            self.wire.on_control(DTMF_EVENT, now)
            metrics.limited(Limited.DTMF_INVALID)
            self._note("dropped a dtmf that is not a keypad key: %s", exc)
            return
        except MediaProtocolError as exc:
            self.wire.on_control("malformed", now)
            self.malformed += 1
            self._note("ignored a bad control message: %s", exc)
            return
        self.wire.on_control(control_name(control), now)
        if isinstance(control, Dtmf):
            if not self.dtmf_bucket.take(1.0, now):
                metrics.limited(Limited.DTMF_RATE)
                return
            # `{"event":"websocket:dtmf","digit":"3"}`: `digit` is one of DTMF_DIGITS here
            # (parse_control refused anything else).
            self.record.line("caller", f"[keypad {control.digit}]")
            self.link.send(rt.text_item(
                "user", f"The caller pressed {control.digit} on the phone keypad."))
            self.turns.request()
        elif isinstance(control, UnknownControl):
            self._note("ignored control message %r", control.event)
        else:
            self._note("ignored a repeated websocket:connected", None)

    def _note(self, fmt: str, arg: object) -> None:
        """Log a skipped control message, the first CONTROL_LOG_LIMIT of a call only."""
        self.notes += 1
        if self.notes <= CONTROL_LOG_LIMIT:
            if arg is None:
                log.info(fmt)
            else:
                log.info(fmt, arg)

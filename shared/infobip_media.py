"""Infobip media-stream WebSocket messages (pure: parse and build, no sockets).

No published spec covers this socket; the facts below follow Infobip's media-streaming
samples and tutorial, as the README ("Protocol decisions") records them. Text frames carry
JSON control messages; binary frames carry 16-bit little-endian mono PCM, 20 ms each.

Everything a peer sends is untrusted until its media token was checked, and only partly
trusted after: every value read here is bounded (lengths, digits, character sets) and any
malformed message raises `MediaProtocolError`, never another exception, so the gateway can
refuse or skip it cleanly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

CONNECTED_EVENT = "websocket:connected"
DTMF_EVENT = "websocket:dtmf"
CLEAR_MESSAGE = orjson.dumps({"action": "clear"}).decode()
#: Rates the gateway accepts: Infobip's media-stream configs allow 8000/16000/24000/32000
#: (README "Protocol decisions"); 48000 too, for other senders.
SUPPORTED_RATES = frozenset({8000, 16000, 24000, 32000, 48000})
FRAME_MS = 20
#: DTMF keys of a telephone keypad (ITU-T Q.23: 0-9, *, # and the column keys A-D).
#: Anything else in a `websocket:dtmf` `digit` is not a key press and is refused.
DTMF_DIGITS = frozenset("0123456789*#ABCD")
#: Bounds on the flattened customData of `websocket:connected`: the orchestrator sets three
#: short keys (cbToken, cbCallId, cbProfile); more, or longer, is not ours and is dropped.
MAX_CUSTOM_KEYS = 32
MAX_CUSTOM_KEY_CHARS = 64
MAX_CUSTOM_VALUE_CHARS = 256
_MAX_DTMF_DURATION_MS = 60_000
_MAX_RATE_DIGITS = 6  # 48000 has five; more digits can only be junk (and int() of 5,000
#                       digits raises ValueError, not a protocol error)

_RATE = re.compile(r"rate\s*=\s*(\d+)", re.IGNORECASE)


def _clip(value: object, limit: int = 40) -> str:
    """A peer's value quoted in an error message, never more than `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class MediaProtocolError(ValueError):
    """A text frame that is not a valid Infobip media control message."""


class BadSampleRate(MediaProtocolError):
    """`websocket:connected` names a rate the gateway cannot serve (close 1003)."""


class InvalidDtmf(MediaProtocolError):
    """A `websocket:dtmf` whose `digit` is not one keypad key."""


@dataclass(frozen=True)
class Connected:
    """`websocket:connected`: the audio format plus the dialog's customData, flattened."""

    content_type: str
    sample_rate: int
    custom_data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Dtmf:
    digit: str
    duration_ms: int | None = None


@dataclass(frozen=True)
class UnknownControl:
    """A control message we do not act on; kept so the session can log it."""

    event: str
    raw: dict[str, Any]


ControlMessage = Connected | Dtmf | UnknownControl


def parse_sample_rate(content_type: str) -> int:
    """`audio/l16;rate=24000` -> 24000. Raises MediaProtocolError for another format or no
    rate, BadSampleRate for a rate outside SUPPORTED_RATES (or with absurdly many digits)."""
    if not content_type.lower().startswith("audio/l16"):
        raise MediaProtocolError(f"unsupported content-type {_clip(content_type)}")
    match = _RATE.search(content_type)
    if not match:
        raise MediaProtocolError(f"no rate in content-type {_clip(content_type)}")
    digits = match.group(1)
    if len(digits) > _MAX_RATE_DIGITS:
        raise BadSampleRate(f"unsupported sample rate {_clip(digits, 12)}")
    rate = int(digits)
    if rate not in SUPPORTED_RATES:
        raise BadSampleRate(f"unsupported sample rate {rate}")
    return rate


def _custom_data(data: dict[str, Any]) -> dict[str, str]:
    """The flattened customData: scalar values of bounded keys, at most MAX_CUSTOM_KEYS."""
    custom: dict[str, str] = {}
    for key, value in data.items():
        if key in ("event", "content-type") or len(key) > MAX_CUSTOM_KEY_CHARS:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            continue
        text = value if isinstance(value, str) else repr(value)
        if len(text) > MAX_CUSTOM_VALUE_CHARS:
            continue
        custom[key] = text
        if len(custom) >= MAX_CUSTOM_KEYS:
            break
    return custom


def parse_control(text: str | bytes) -> ControlMessage:
    """Parse one text frame from Infobip. Raises MediaProtocolError (or a subclass) on any
    malformed message, and nothing else."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:  # also too deep nesting, invalid UTF-8
        raise MediaProtocolError(f"not JSON: {_clip(str(exc), 80)}") from None
    if not isinstance(data, dict):
        raise MediaProtocolError("control message is not a JSON object")
    event = data.get("event")
    if event == CONNECTED_EVENT:
        content_type = data.get("content-type", "")
        if not isinstance(content_type, str):
            raise MediaProtocolError("content-type is not a string")
        rate = parse_sample_rate(content_type)
        return Connected(content_type=content_type, sample_rate=rate,
                         custom_data=_custom_data(data))
    if event == DTMF_EVENT:
        digit = data.get("digit")
        if not isinstance(digit, str) or not digit:
            raise MediaProtocolError("dtmf without a digit")
        if len(digit) != 1 or digit not in DTMF_DIGITS:
            raise InvalidDtmf(f"dtmf digit is not a keypad key: {_clip(digit, 24)}")
        duration = data.get("duration")
        valid = (isinstance(duration, int) and not isinstance(duration, bool)
                 and 0 <= duration <= _MAX_DTMF_DURATION_MS)
        return Dtmf(digit=digit, duration_ms=duration if valid else None)
    name = event if isinstance(event, str) else type(event).__name__
    return UnknownControl(event=name[:MAX_CUSTOM_KEY_CHARS], raw=data)


def build_connected(sample_rate: int, custom_data: dict[str, str] | None = None) -> str:
    """The first text frame Infobip sends (used by the simulator)."""
    msg: dict[str, Any] = {"event": CONNECTED_EVENT,
                           "content-type": f"audio/l16;rate={sample_rate}"}
    for key, value in (custom_data or {}).items():
        msg.setdefault(key, value)
    return orjson.dumps(msg).decode()


def build_dtmf(digit: str, duration_ms: int = 250) -> str:
    return orjson.dumps({"event": DTMF_EVENT, "digit": digit, "duration": duration_ms}).decode()


def is_clear(text: str | bytes) -> bool:
    """True for `{"action": "clear"}` (used by the simulator)."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("action") == "clear"


def frame_bytes(sample_rate: int, frame_ms: int = FRAME_MS) -> int:
    """Bytes in one frame of 16-bit mono PCM: 960 at 24 kHz / 20 ms."""
    return sample_rate * frame_ms // 1000 * 2

"""Infobip media-stream WebSocket messages (pure: parse and build, no sockets).

Source: ../shared/reference/infobip-calls.md, "Media stream WebSocket". Text frames carry
JSON control messages; binary frames carry 16-bit little-endian mono PCM, 20 ms each.
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
#: (infobip-calls.md); 48000 too, as issue 5 asks, for other senders.
SUPPORTED_RATES = frozenset({8000, 16000, 24000, 32000, 48000})
FRAME_MS = 20

_RATE = re.compile(r"rate\s*=\s*(\d+)", re.IGNORECASE)


class MediaProtocolError(ValueError):
    """A text frame that is not a valid Infobip media control message."""


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
    """`audio/l16;rate=24000` -> 24000. Raises MediaProtocolError on anything else."""
    if not content_type.lower().startswith("audio/l16"):
        raise MediaProtocolError(f"unsupported content-type {content_type!r}")
    match = _RATE.search(content_type)
    if not match:
        raise MediaProtocolError(f"no rate in content-type {content_type!r}")
    return int(match.group(1))


def parse_control(text: str | bytes) -> ControlMessage:
    """Parse one text frame from Infobip."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MediaProtocolError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MediaProtocolError("control message is not a JSON object")
    event = data.get("event")
    if event == CONNECTED_EVENT:
        content_type = str(data.get("content-type", ""))
        rate = parse_sample_rate(content_type)
        custom = {
            str(k): str(v)
            for k, v in data.items()
            if k not in ("event", "content-type") and isinstance(v, str | int | float)
        }
        return Connected(content_type=content_type, sample_rate=rate, custom_data=custom)
    if event == DTMF_EVENT:
        digit = data.get("digit")
        if not isinstance(digit, str) or not digit:
            raise MediaProtocolError("dtmf without a digit")
        duration = data.get("duration")
        return Dtmf(digit=digit, duration_ms=duration if isinstance(duration, int) else None)
    return UnknownControl(event=str(event), raw=data)


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

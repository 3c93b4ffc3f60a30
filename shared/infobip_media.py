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
from typing import Any, Literal

import orjson

CONNECTED_EVENT = "websocket:connected"
DTMF_EVENT = "websocket:dtmf"
CLEAR_MESSAGE = orjson.dumps({"action": "clear"}).decode()
#: Sample rates an Infobip media-stream config can name (`sampleRate`, README "Protocol
#: decisions"), in ascending order: the one list for CLI choices and tests.
INFOBIP_RATES = (8000, 16000, 24000, 32000)
#: Rates the gateway accepts: Infobip's, and 48000 too, for other senders.
SUPPORTED_RATES = frozenset((*INFOBIP_RATES, 48000))
FRAME_MS = 20
#: Binary frames carry 16-bit little-endian mono PCM.
SAMPLE_WIDTH = 2
#: DTMF keys of a telephone keypad (ITU-T Q.23: 0-9, *, # and the column keys A-D).
#: Anything else in a `websocket:dtmf` `digit` is not a key press and is refused.
DTMF_DIGITS = frozenset("0123456789*#ABCD")
#: The dialog's customData keys the orchestrator sets and the gateway reads back from
#: `websocket:connected` (docs/protocol-assumptions.md, "Media token location"). Read back
#: without regard to case, at the top level or nested under CUSTOM_DATA_KEY.
TOKEN_KEY = "cbToken"
CALL_ID_KEY = "cbCallId"
PROFILE_KEY = "cbProfile"
#: Where a nested customData object would sit in `websocket:connected`.
CUSTOM_DATA_KEY = "customData"
#: Bounds on the customData of `websocket:connected`: the orchestrator sets three short
#: keys; more, or longer, is not ours and is dropped.
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


#: Key names kept for logs and wire observations (names only, never values).
MAX_KEY_NAMES = 16

CustomDataLocation = Literal["top", "customData", "missing"]


@dataclass(frozen=True)
class Connected:
    """`websocket:connected`: the audio format plus the dialog's customData.

    Whether Infobip copies customData flattened into this message or nests it under
    `customData` is not published (docs/protocol-assumptions.md, "Media token location"), so
    both are read: `custom_data` holds top-level keys and the nested object's keys, folded
    to lower case (a top-level key wins over a nested one of the same name). `key_names`
    and `nested_key_names` are the names as received, for a refusal's log line."""

    content_type: str
    sample_rate: int
    custom_data: dict[str, str] = field(default_factory=dict)
    key_names: tuple[str, ...] = ()
    nested_key_names: tuple[str, ...] | None = None
    _nested_only: frozenset[str] = frozenset()

    def custom(self, key: str) -> str:
        """The customData value for `key` (any case, either location), or ""."""
        return self.custom_data.get(key.lower(), "")

    def location(self, key: str) -> CustomDataLocation:
        """Where `key` was found: at the top level, nested under customData, or nowhere."""
        folded = key.lower()
        if folded not in self.custom_data:
            return "missing"
        return "customData" if folded in self._nested_only else "top"

    def describe_keys(self) -> str:
        """`event, content-type, customData{cbtoken, ...}`: key names only, for logs."""
        names = [n for n in self.key_names if n != CUSTOM_DATA_KEY or
                 self.nested_key_names is None]
        if self.nested_key_names is not None:
            names.append(f"{CUSTOM_DATA_KEY}{{{', '.join(self.nested_key_names)}}}")
        return ", ".join(names) or "(none)"


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


def _scalar_entries(data: dict[str, Any], into: dict[str, str]) -> None:
    """Scalar values of bounded keys, folded to lower case, until `into` holds
    MAX_CUSTOM_KEYS; a key already in `into` keeps its value."""
    for key, value in data.items():
        if len(into) >= MAX_CUSTOM_KEYS:
            return
        if not isinstance(key, str) or len(key) > MAX_CUSTOM_KEY_CHARS:
            continue
        folded = key.lower()
        if folded in ("event", "content-type") or folded in into:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            continue
        text = value if isinstance(value, str) else repr(value)
        if len(text) > MAX_CUSTOM_VALUE_CHARS:
            continue
        into[folded] = text


def _key_names(data: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(k)[:MAX_CUSTOM_KEY_CHARS] for k in list(data)[:MAX_KEY_NAMES])


def _connected(data: dict[str, Any], content_type: str, rate: int) -> Connected:
    custom: dict[str, str] = {}
    _scalar_entries(data, custom)
    top = frozenset(custom)
    nested = data.get(CUSTOM_DATA_KEY)
    nested_names: tuple[str, ...] | None = None
    if isinstance(nested, dict):
        nested_names = _key_names(nested)
        _scalar_entries(nested, custom)
    return Connected(content_type=content_type, sample_rate=rate, custom_data=custom,
                     key_names=_key_names(data), nested_key_names=nested_names,
                     _nested_only=frozenset(custom) - top)


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
        return _connected(data, content_type, parse_sample_rate(content_type))
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
    return sample_rate * frame_ms // 1000 * SAMPLE_WIDTH


def bytes_per_ms(sample_rate: int) -> float:
    """Bytes of 16-bit mono PCM per millisecond at `sample_rate` (48.0 at 24 kHz)."""
    return sample_rate * SAMPLE_WIDTH / 1000.0

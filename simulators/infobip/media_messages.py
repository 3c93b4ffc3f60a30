"""The media WebSocket's messages as Infobip sends and accepts them, built from plain dicts.

No published spec covers this socket (Infobip's OpenAPI document does not describe it); the
shapes below are the ones docs/protocol-assumptions.md records with their sources and what
breaks if they are wrong. They are written here, not imported from
`callbridge.shared.infobip_media`,
so the gateway's parser is tested against an independent statement of the protocol.
"""

from __future__ import annotations

from typing import Any

import orjson

#: each binary frame carries 20 ms of 16-bit little-endian mono PCM
FRAME_MS = 20


def frame_bytes(sample_rate: int) -> int:
    """Bytes in one 20 ms frame: 2 bytes a sample, `sample_rate / 50` samples."""
    return sample_rate * FRAME_MS // 1000 * 2


#: Where `websocket:connected` carries the dialog's customData: "flat" (the assumption)
#: or "nested" under a `customData` object (the alternative docs/protocol-assumptions.md
#: names, for showing that `callbridge preflight` reports it).
CUSTOM_DATA_LAYOUTS = ("flat", "nested")


def connected_message(sample_rate: int, custom_data: dict[str, str] | None = None,
                      layout: str = "flat") -> str:
    """The first text frame: `websocket:connected` with the dialog's `customData` keys
    flattened into it (assumption "media token location"; the two protocol keys win over a
    customData key of the same name), or with `layout="nested"` as one `customData` object
    beside the two protocol keys."""
    if layout not in CUSTOM_DATA_LAYOUTS:
        raise ValueError(f"customData layout must be one of {CUSTOM_DATA_LAYOUTS}")
    protocol = {"event": "websocket:connected", "content-type": f"audio/l16;rate={sample_rate}"}
    message: dict[str, Any]
    if layout == "nested":
        message = {**protocol, "customData": dict(custom_data or {})}
    else:
        message = {**(custom_data or {}), **protocol}
    return orjson.dumps(message).decode()


def dtmf_message(digit: str, duration_ms: int = 250) -> str:
    return orjson.dumps({"event": "websocket:dtmf", "digit": digit,
                         "duration": duration_ms}).decode()


def is_clear(text: str | bytes) -> bool:
    """True for exactly `{"action": "clear"}` (keys beyond `action` are not documented)."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return data == {"action": "clear"}

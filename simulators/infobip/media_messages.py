"""The media WebSocket's messages as Infobip sends and accepts them, built from plain dicts.

No published spec covers this socket (Infobip's OpenAPI document does not describe it); the
shapes below are the ones docs/protocol-assumptions.md records with their sources and what
breaks if they are wrong. They are written here, not imported from `shared.infobip_media`,
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


def connected_message(sample_rate: int, custom_data: dict[str, str] | None = None) -> str:
    """The first text frame: `websocket:connected` with the dialog's `customData` keys
    flattened into it (assumption "media token location"; the two protocol keys win over a
    customData key of the same name)."""
    message: dict[str, Any] = dict(custom_data or {})
    message["event"] = "websocket:connected"
    message["content-type"] = f"audio/l16;rate={sample_rate}"
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

"""What one call's media WebSocket showed about Infobip's side of the protocol.

The media gateway fills a WireObservation for every call (counters only, no audio, no
values of customData keys) and, while `callbridge preflight --capture-call` has armed it
(`redis_keys.PREFLIGHT_ARMED`), appends it to `redis_keys.WIRE_OBSERVATIONS_STREAM` when the
call ends. Preflight reads it and reports which assumptions in docs/protocol-assumptions.md
held. One definition of the record, used by both sides.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

#: Where the gateway found the media token in `websocket:connected`.
TokenLocation = Literal["top", "customData", "missing"]

#: A gap between two inbound audio frames longer than this counts as a silence gap (the
#: assumption is a frame every 20 ms; jitter of a few frames is normal).
INBOUND_GAP_MS = 200.0

#: At most this many distinct values are kept in any name/size tally; the rest are counted
#: under OTHER, so a hostile peer cannot grow the record.
MAX_TALLY_ENTRIES = 8
OTHER = "other"


def tally(counts: dict[str, int], key: str) -> None:
    """Count `key` in a bounded tally (see MAX_TALLY_ENTRIES)."""
    if key not in counts and len(counts) >= MAX_TALLY_ENTRIES:
        key = OTHER
    counts[key] = counts.get(key, 0) + 1


class ConnectedShape(BaseModel):
    """The first text frame's shape: key names only, never values."""

    keys: list[str] = Field(default_factory=list)
    custom_data_keys: list[str] | None = None
    token_location: TokenLocation = "missing"
    content_type: str = ""


class InboundAudio(BaseModel):
    frames: int = 0
    bytes: int = 0
    frame_sizes: dict[str, int] = Field(default_factory=dict)
    max_gap_ms: float = 0.0
    gaps_over_threshold: int = 0
    gap_threshold_ms: float = INBOUND_GAP_MS


class Keepalive(BaseModel):
    pings_sent: int = 0
    pongs_received: int = 0
    max_rtt_ms: float | None = None


class ClearAcks(BaseModel):
    sent: int = 0
    #: names (`event`/`action`) of text frames that arrived within CLEAR_ACK_WINDOW_S of a clear
    replies: dict[str, int] = Field(default_factory=dict)


#: How long after a `{"action": "clear"}` a text frame counts as its possible answer.
CLEAR_ACK_WINDOW_S = 2.0


class WireObservation(BaseModel):
    version: Literal[1] = 1
    call_id: str
    gateway_id: str = ""
    started_at_ms: int = 0
    ended_at_ms: int = 0
    end_reason: str = ""
    connected: ConnectedShape = Field(default_factory=ConnectedShape)
    inbound: InboundAudio = Field(default_factory=InboundAudio)
    keepalive: Keepalive = Field(default_factory=Keepalive)
    clear: ClearAcks = Field(default_factory=ClearAcks)
    control_events: dict[str, int] = Field(default_factory=dict)

    def to_stream_fields(self) -> dict[str, str]:
        return {"call_id": self.call_id, "observation": self.model_dump_json()}

    @classmethod
    def from_stream_fields(cls, fields: dict[Any, Any]) -> WireObservation:
        raw = fields.get("observation", fields.get(b"observation", "{}"))
        return cls.model_validate_json(raw)

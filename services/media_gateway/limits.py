"""What one peer may cost the gateway, before and after it authenticates.

Threat model (README "Security"): anyone who can reach the media port can open connections;
only a peer holding a valid one-time media token is admitted to a call. So:

- **Before admission** a connection is nobody: it may cost a bounded amount of memory
  (`ConnectionLimits`: request head, frame size, a byte-bounded buffer of early audio, a
  frame count) for a bounded time (the admission deadline, GATEWAY_CONNECT_TIMEOUT_S), and it
  counts against its own bounded set (`AdmissionGate`, GATEWAY_MAX_PENDING), never against
  the session cap: when that set is full, the connection that has waited longest is
  dropped, because a real Infobip leg sends `websocket:connected` at once and is admitted
  within a round trip to Redis, while a silent or junk one waits until it is dropped.
- **After admission** a call is held to real time (`CallerMeter`): a token bucket in
  bytes of the call's PCM (so in audio-seconds) lets a burst of GATEWAY_CALLER_AUDIO_BURST_MS
  through and then real time; frames above it are dropped before they are unmasked, resampled or
  sent to the model, so the model never receives more than real time + burst of audio. A second,
  larger bucket refilled at GATEWAY_CALLER_FLOOD_RATIO x real time catches a sender that keeps
  going: when it runs dry the call is cut off (close 1008, end reason `caller_flood`). Every frame,
  whatever its length, is charged at least `MIN_FRAME_MS` of audio, and every other frame (text,
  ping, fragment) `CONTROL_FRAME_MS`, so tiny frames are not free. Because frames above the budget
  cost only a header parse, one flooding peer's work per event-loop turn is bounded and the other
  calls keep their 20 ms pace.

The per-frame check is a few float operations on slotted attributes: no allocation, no I/O
(the audio path's budget: README "Audio path").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from callbridge.services.media_gateway import metrics
from callbridge.shared.infobip_media import bytes_per_ms

log = logging.getLogger(__name__)

#: A frame shorter than this is charged as this much audio: a 20 ms frame is the protocol's
#: (README "Protocol decisions"), and a flood of 2-byte frames must not be free.
MIN_FRAME_MS = 5.0
#: A text, ping or fragment frame is charged as one frame of audio against the hard limit.
CONTROL_FRAME_MS = 20.0

ACCEPT, DROP, CUT = 0, 1, 2


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on a connection before it is admitted (GatewaySettings has the values)."""

    max_request_bytes: int = 16 * 1024
    preadmission_max_frame_bytes: int = 8 * 1024
    preadmission_buffer_bytes: int = 128 * 1024
    #: Frames of any kind before admission: a real leg sends one text frame and then audio
    #: at 50 frames a second, so 400 is 8 s of audio, past any admission deadline.
    preadmission_max_frames: int = 400
    #: Text/control frames before admission: `websocket:connected`, perhaps a DTMF or a ping.
    preadmission_max_control_frames: int = 8


class TokenBucket:
    """`rate` units a second, at most `capacity` saved up; starts full."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.stamp = now

    def take(self, amount: float, now: float) -> bool:
        level = self.level + (now - self.stamp) * self.rate
        self.stamp = now
        if level > self.capacity:
            level = self.capacity
        if level < amount:
            self.level = level
            return False
        self.level = level - amount
        return True


class CallerMeter:
    """One admitted call's inbound budget, in bytes of its PCM (see module docstring)."""

    __slots__ = ("bytes_per_s", "control_cost", "dropped", "flood_ratio", "hard_cap",
                 "hard_level", "hard_rate", "min_cost", "soft_cap", "soft_level", "stamp")

    def __init__(self, sample_rate: int, burst_ms: float, flood_ratio: float,
                 flood_window_s: float, now: float) -> None:
        bps = bytes_per_ms(sample_rate) * 1000.0
        self.bytes_per_s = bps
        self.soft_cap = self.soft_level = bps * burst_ms / 1000.0
        self.flood_ratio = flood_ratio
        self.hard_rate = bps * flood_ratio
        self.hard_cap = self.hard_level = self.hard_rate * flood_window_s
        self.min_cost = bps * MIN_FRAME_MS / 1000.0
        self.control_cost = bps * CONTROL_FRAME_MS / 1000.0
        self.stamp = now
        self.dropped = 0

    def _refill(self, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed > 0.0:
            self.stamp = now
            soft = self.soft_level + elapsed * self.bytes_per_s
            self.soft_level = soft if soft < self.soft_cap else self.soft_cap
            hard = self.hard_level + elapsed * self.hard_rate
            self.hard_level = hard if hard < self.hard_cap else self.hard_cap

    def charge_audio(self, nbytes: int, now: float) -> int:
        """ACCEPT, DROP (over real time + burst) or CUT (over the hard limit)."""
        self._refill(now)
        cost = nbytes if nbytes > self.min_cost else self.min_cost
        hard = self.hard_level - cost
        if hard < 0.0:
            return CUT
        self.hard_level = hard
        if self.soft_level < cost:
            self.dropped += 1
            return DROP
        self.soft_level -= cost
        return ACCEPT

    def charge_control(self, now: float) -> int:
        """ACCEPT or CUT: a text/control frame against the hard limit only."""
        self._refill(now)
        hard = self.hard_level - self.control_cost
        if hard < 0.0:
            return CUT
        self.hard_level = hard
        return ACCEPT

    def admit_early(self, sizes: list[int], now: float) -> int:
        """How many of the oldest early frames (held before admission) to drop so the rest
        fit in the burst; charges the rest (soft bucket only: their arrival was already
        bounded by the pre-admission budget)."""
        self._refill(now)
        total = float(sum(max(n, self.min_cost) for n in sizes))
        skip = 0
        for n in sizes:
            if total <= self.soft_level:
                break
            total -= max(n, self.min_cost)
            skip += 1
        self.soft_level -= total
        self.dropped += skip
        return skip


class Evictable(Protocol):
    def evict(self) -> None: ...


class AdmissionGate:
    """The connections not yet admitted, oldest first, at most `limit` (module docstring)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending: dict[Evictable, None] = {}  # insertion-ordered: oldest first
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[Evictable]:
        return iter(list(self._pending))

    def enter(self, conn: Evictable) -> None:
        self._pending[conn] = None
        while len(self._pending) > self.limit:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            self.evicted += 1
            metrics.refused(metrics.RefusalReason.CAPACITY)
            oldest.evict()
        metrics.PENDING.set(len(self._pending))

    def leave(self, conn: Evictable) -> None:
        if self._pending.pop(conn, ACCEPT) is None:  # it was there (its value is None)
            metrics.PENDING.set(len(self._pending))


class SessionSlots:
    """Admitted calls (plus those whose token is being checked), at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def try_take(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def give_back(self) -> None:
        if self.used > 0:
            self.used -= 1

"""Playout model for one caller: agent audio queued in 20 ms frames, paced at real time.

Pure: no sockets, no clock of its own. The gateway asks `next_due()` when to look again and
calls `pop_frame(now)` with its own clock, so tests drive time by hand.

Pacing rule: one fixed 20 ms grid per call, from its first frame. Every frame, agent audio
or filler (silence or the hold sound), is sent one pacer tick before its slot on the
receiver's timeline, and each send advances the grid by exactly one frame: never re-anchored
to "now" at a transition. Agent audio and filler used to be sent with different leads
(a frame + a tick for audio, a tick for filler), so the end of every agent item and every
barge-in clear left a gap of two frames plus tick jitter between two frames at the
receiver (measured: 40-45 ms at the legs of `bench.gateway`, above Infobip's 40 ms
tolerance). A burst's first frame takes the next slot: the filler frame before it is
still sounding until then, so sending it earlier would not be heard any sooner (README
"Architecture", "Audio path": the first frame of a burst at once, the rest timed from it;
with filler the grid never stops, so "at once" applies at call start). A pacer that wakes
late sends the frames that came due back to back (catch-up) and keeps the grid; only a
stall longer than `MAX_CATCHUP_S`, which the caller has heard in full anyway, starts a new
grid rather than flooding the receiver. The stream is steady (a media socket that goes
quiet may be dropped: docs/protocol-assumptions.md), never drifts ahead (the lead is at
most a frame and a tick), and what is "sent but not yet heard" is always known:
`lead(now)`, which barge-in subtracts when it truncates the agent's item.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from callbridge.shared.infobip_media import FRAME_MS, bytes_per_ms, frame_bytes

#: How many per-item counters to keep: barge-in only ever looks at the current item.
_ITEMS_KEPT = 8
#: A stall longer than this (the receiver already heard it) starts a new grid; shorter ones
#: are caught up by sending the due frames back to back.
MAX_CATCHUP_S = 0.1
#: Float slack when comparing a clock reading with a slot built by repeated additions.
_EPS = 1e-6


class _Segment:
    """A run of queued bytes belonging to one agent item."""

    __slots__ = ("item_id", "nbytes")

    def __init__(self, item_id: str, nbytes: int) -> None:
        self.item_id = item_id
        self.nbytes = nbytes


class Playout:
    """The frames owed to one caller and the pacing state of their receiver."""

    def __init__(self, rate: int, frame_ms: int = FRAME_MS, tick_ms: float = 5.0) -> None:
        self.rate = rate
        self.frame_ms = frame_ms
        self.frame_bytes = frame_bytes(rate, frame_ms)
        self.bytes_per_ms = bytes_per_ms(rate)
        self._frame_s = frame_ms / 1000.0
        self._send_lead = tick_ms / 1000.0  # a frame leaves this long before its slot
        self._buf = bytearray()
        self._segments: deque[_Segment] = deque()  # queue order
        self._playhead: float | None = None  # the grid: where the next frame will play
        self._catching_up = False
        self._silence = bytes(self.frame_bytes)
        self._filler: bytes | None = None
        self._filler_pos = 0
        self._sent: OrderedDict[str, int] = OrderedDict()  # item_id -> bytes sent
        self.last_item: str | None = None  # item of the newest audio frame sent
        self.last_was_audio = False
        self.frames_sent = 0
        self.audio_frames = 0
        self.late_frames = 0  # the receiver ran dry before this frame (a gap it heard)
        self.underruns = 0  # a gap in the middle of agent audio

    # Queue -------------------------------------------------------------------------------

    def push(self, pcm: bytes, item_id: str) -> bool:
        """Queue agent audio. True when this starts a burst (the sender should send now)."""
        if not pcm:
            return False
        starts = len(self._buf) < self.frame_bytes
        self._buf += pcm
        if self._segments and self._segments[-1].item_id == item_id:
            self._segments[-1].nbytes += len(pcm)
        else:
            self._segments.append(_Segment(item_id, len(pcm)))
        return starts and len(self._buf) >= self.frame_bytes

    def pad_item(self) -> bool:
        """End of an item: complete its last frame with silence so it is sent, not held back
        waiting for audio that will never come. True if a frame became ready."""
        partial = len(self._buf) % self.frame_bytes
        if not partial:
            return False
        pad = self.frame_bytes - partial
        self._buf += bytes(pad)
        if self._segments:
            self._segments[-1].nbytes += pad
        return len(self._buf) == self.frame_bytes

    def clear(self) -> int:
        """Drop everything queued (barge-in). Returns the bytes dropped."""
        dropped = len(self._buf)
        self._buf.clear()
        self._segments.clear()
        return dropped

    def set_filler(self, pcm: bytes | None) -> None:
        """Loop `pcm` instead of silence when no agent audio is queued (the hold sound)."""
        if pcm:
            rem = len(pcm) % self.frame_bytes
            pcm = pcm + bytes(self.frame_bytes - rem) if rem else pcm
        self._filler = pcm or None
        self._filler_pos = 0

    @property
    def queued_bytes(self) -> int:
        return len(self._buf)

    def queued_ms(self) -> float:
        return len(self._buf) / self.bytes_per_ms

    # Pacing ------------------------------------------------------------------------------

    def lead(self, now: float) -> float:
        """Seconds of sent audio the receiver has not played yet."""
        return 0.0 if self._playhead is None else max(0.0, self._playhead - now)

    def next_due(self) -> float:
        """When `pop_frame` will next return a frame (loop time); -inf before the first."""
        if self._playhead is None:
            return float("-inf")
        return self._playhead - self._send_lead - _EPS

    def pop_frame(self, now: float) -> bytes | None:
        """The frame to send at `now` (the next grid slot's), or None if none is due yet."""
        head = self._playhead
        has_audio = len(self._buf) >= self.frame_bytes
        if head is None:
            head = now + self._send_lead  # the grid starts at the call's first frame
        else:
            if now < head - self._send_lead - _EPS:
                return None
            behind = now - head
            late = behind > 0.002  # the receiver ran dry: it heard a gap
            if late and not self._catching_up:  # one gap, however many frames catch it up
                self.late_frames += 1
                if has_audio and self.last_was_audio:
                    self.underruns += 1
            self._catching_up = late
            if behind > MAX_CATCHUP_S:
                head = now + self._send_lead
        self._playhead = head + self._frame_s
        self.frames_sent += 1
        if has_audio:
            self.audio_frames += 1
            self.last_was_audio = True
            return self._take_audio()
        self.last_was_audio = False
        if self._filler is None:
            return self._silence
        start = self._filler_pos
        end = start + self.frame_bytes
        self._filler_pos = 0 if end >= len(self._filler) else end
        return self._filler[start:end]

    def _take_audio(self) -> bytes:
        n = self.frame_bytes
        frame = bytes(self._buf[:n])
        del self._buf[:n]  # O(1) amortised: bytearray deletes from the front in place
        left = n
        while left and self._segments:
            seg = self._segments[0]
            take = min(left, seg.nbytes)
            self._sent[seg.item_id] = self._sent.get(seg.item_id, 0) + take
            self.last_item = seg.item_id
            left -= take
            seg.nbytes -= take
            if not seg.nbytes:
                self._segments.popleft()
        if len(self._sent) > _ITEMS_KEPT:
            self._sent.popitem(last=False)
        return frame

    # Accounting --------------------------------------------------------------------------

    def sent_ms(self, item_id: str) -> float:
        return self._sent.get(item_id, 0) / self.bytes_per_ms

    def unplayed_ms(self, item_id: str, now: float) -> float:
        """Sent but not yet heard: the receiver's lead, if this item was sent last."""
        if item_id != self.last_item or not self.last_was_audio:
            return 0.0
        return min(self.lead(now) * 1000.0, self.sent_ms(item_id))

    def has_queued(self, item_id: str) -> bool:
        return any(seg.item_id == item_id for seg in self._segments)

    def playing(self, now: float) -> bool:
        """Agent audio is queued or still sounding at the receiver."""
        return bool(self._buf) or (self.last_was_audio and self.lead(now) > 0.0)


@dataclass(slots=True)
class AgentItem:
    """What the model generated for one assistant item (24 kHz model time)."""

    item_id: str
    response_id: str
    generated_ms: float = 0.0
    audio_done: bool = False


def truncate_point(sent_ms: float, unplayed_ms: float, generated_ms: float,
                   allowance_ms: float, finished: bool) -> int | None:
    """`audio_end_ms` for `conversation.item.truncate`, or None to skip the truncate.

    OpenAI's Realtime conversations guide ("Truncating" an interrupted response,
    https://platform.openai.com/docs/guides/realtime-conversations) and the
    `conversation.item.truncate` reference
    (https://platform.openai.com/docs/api-reference/realtime-client-events/conversation/item/truncate):
    truncate at what the caller heard, `min(ms sent for the item, ms generated)`, minus no
    more than the playout allowance (what may still sit in the receiver's buffer) and never
    beyond what was generated (the server rejects that: "Audio content of X ms is already
    shorter than Y ms"). Skip it when nothing was heard or when playback had finished (the
    item is already whole).
    """
    if finished:
        return None
    heard = sent_ms - min(max(unplayed_ms, 0.0), max(allowance_ms, 0.0))
    end = int(min(heard, generated_ms))
    return end if end > 0 else None

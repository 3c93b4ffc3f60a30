"""What the caller hears: one call's audio output towards Infobip.

Shaped like livekit-agents' narrow `AudioOutput` (voice/io.py: capture a frame, flush,
clear the buffer, wait for playout): the rest of the gateway pushes agent audio, ends an
item, clears, waits until everything was heard, and knows the sample rate, and nothing
else. Underneath, this owns the pieces that do it: the model -> caller resampler (24 kHz to
the call's rate), the `Playout` that queues 20 ms frames and keeps their timing, and the
`Sender` that the process-wide `PacerHub` serves. `{"action": "clear"}` (barge-in, or an
ending notice cutting the agent off) is sent here too, and counted on the call's wire
observation (docs/protocol-assumptions.md, `{"action": "clear"}` and its acknowledgement).

`push` runs for every model audio delta: its collaborators' methods are bound once, here,
so a delta costs one call into this object and no attribute chain through the session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from callbridge.services.media_gateway.pacer import PacerHub, Sender
from callbridge.services.media_gateway.ws_fastpath import MediaConnection
from callbridge.shared import realtime_events as rt
from callbridge.shared.audio.playout import Playout
from callbridge.shared.audio.resampler import Quality, StreamResampler
from callbridge.shared.infobip_media import CLEAR_MESSAGE

#: The clear message as the text frame's payload.
CLEAR = CLEAR_MESSAGE.encode()
#: Item id under which the gateway's own notices are queued (never a model item id).
NOTICE_ITEM = "notice"


class CallerOutput:
    """Agent audio to one caller, paced at real time (see module docstring)."""

    __slots__ = ("_kick", "_on_clear", "_pad", "_push", "_resample", "_time", "hub", "playout",
                 "rate", "resampler", "sender")

    def __init__(self, conn: MediaConnection, rate: int, hub: PacerHub, *,
                 quality: Quality = "HQ", sample_every: int = 1,
                 on_first_audio: Callable[[], None] | None = None,
                 on_clear: Callable[[float], None] | None = None) -> None:
        self.rate = rate
        self.hub = hub
        self.resampler = StreamResampler(rt.MODEL_RATE, rate, quality)
        self.playout = Playout(rate)
        self.sender = Sender(conn, self.playout, sample_every, on_first_audio, hub.gate)
        self._on_clear = on_clear
        # Bound once: `push` is the per-delta path.
        self._resample = self.resampler.process
        self._push = self.playout.push
        self._pad = self.playout.pad_item
        self._kick = self.sender.kick
        self._time = asyncio.get_running_loop().time

    # Life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Join the pacer: from now on the caller hears frames (filler when nothing queued)."""
        self.hub.add(self.sender)

    def silence(self) -> None:
        """Leave the pacer now: not one more frame (a fenced call; `close` still follows)."""
        self.hub.remove(self.sender)

    def close(self) -> None:
        """Leave the pacer and free the resampler's native buffers (end of call). Drops the
        callbacks too: they are usually bound methods of the session (a reference cycle)."""
        self.hub.remove(self.sender)
        self.sender.on_first_audio = None
        self._on_clear = None
        self.resampler.close()

    # Agent audio ---------------------------------------------------------------------------

    def push(self, pcm24: bytes, item_id: str, received_at: float) -> None:
        """Queue model audio (24 kHz) of `item_id`; a burst's first frame goes out at once
        when its slot is already due."""
        pcm = self._resample(pcm24)
        if pcm and self._push(pcm, item_id):
            self._kick(self._time(), received_at)

    def flush(self, item_id: str) -> None:
        """The end of an item's audio: what the resampler still holds, then pad the last
        frame with silence so it is sent rather than held back."""
        tail = self.resampler.flush()
        if tail:
            self._push(tail, item_id)
        if self._pad():
            now = self._time()
            self._kick(now, now)

    def clear(self, now: float) -> None:
        """Stop what the caller hears: `{"action": "clear"}` to Infobip, then forget what we
        had queued and what the resampler held (it belongs to the interrupted item)."""
        self.sender.send_text(CLEAR, now)
        if self._on_clear is not None:
            self._on_clear(now)
        self.playout.clear()
        self.resampler.reset()

    def play_notice(self, pcm: bytes) -> float:
        """Play the gateway's own audio (at the call's rate) instead of anything queued or
        looping; returns its duration in seconds."""
        now = self._time()
        if self.playout.playing(now):
            self.clear(now)
        else:
            self.playout.clear()
        self.playout.set_filler(None)
        self._push(pcm, NOTICE_ITEM)
        self._pad()
        self._kick(now, now)
        return len(pcm) / self.playout.bytes_per_ms / 1000.0

    def set_filler(self, pcm: bytes | None) -> None:
        """Loop `pcm` (the hold sound) when no agent audio is queued; None: silence."""
        self.playout.set_filler(pcm)

    # State ---------------------------------------------------------------------------------

    def playing(self, now: float) -> bool:
        """Agent audio is queued or still sounding at Infobip."""
        return self.playout.playing(now)

    @property
    def frames_sent(self) -> int:
        return self.playout.frames_sent

    async def wait_played_out(self, timeout: float) -> bool:
        """Until no agent audio is queued or still sounding at Infobip (bounded): True if
        that happened within `timeout`."""
        waiter = asyncio.Event()
        self.sender.idle_waiter = waiter
        try:
            async with asyncio.timeout(timeout):
                await waiter.wait()
            return True
        except TimeoutError:
            return False
        finally:
            if self.sender.idle_waiter is waiter:
                self.sender.idle_waiter = None

"""What the caller actually hears: received audio played out at real time, `clear` honoured.

The gateway may send agent audio faster than real time; the platform then buffers it and
plays it at 1x. `{"action": "clear"}` (source: Infobip's Calls API reference
(https://www.infobip.com/docs/api), media
stream, "Stop playout of what was already sent") drops whatever was queued and not yet
played. This pure model keeps, for each received chunk, the moment its playout starts, so a
clear cuts exactly what had not been heard yet (sample-aligned) and records what it dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callbridge.shared.pcm import SAMPLE_WIDTH, is_silent


@dataclass
class _Segment:
    start: float   # unix time its first sample plays
    pcm: bytes


@dataclass
class Drop:
    """One clear: when it arrived and how much queued audio it removed."""

    at: float
    dropped_bytes: int
    dropped_ms: float


@dataclass
class Playout:
    rate: int
    _segments: list[_Segment] = field(default_factory=list)
    end: float = 0.0            # when everything queued so far has been played
    voice_end: float = 0.0      # when the last non-silent audio finishes playing
    drops: list[Drop] = field(default_factory=list)
    dropped_pcm: bytearray = field(default_factory=bytearray)

    def _seconds(self, nbytes: int) -> float:
        return nbytes / SAMPLE_WIDTH / self.rate

    def push(self, pcm: bytes, now: float) -> None:
        """Queue `pcm` received at `now`: it plays as soon as what is queued before it ended."""
        start = max(now, self.end)
        self._segments.append(_Segment(start, pcm))
        self.end = start + self._seconds(len(pcm))
        if not is_silent(pcm):
            self.voice_end = self.end

    def clear(self, now: float) -> Drop:
        """Drop everything not played by `now`; a chunk being played is cut at `now`."""
        dropped = 0
        dropped_chunks: list[bytes] = []
        while self._segments:
            seg = self._segments[-1]
            seg_end = seg.start + self._seconds(len(seg.pcm))
            if seg_end <= now:
                break
            if seg.start >= now:
                self._segments.pop()
                dropped += len(seg.pcm)
                dropped_chunks.append(seg.pcm)
                continue
            keep = int((now - seg.start) * self.rate) * SAMPLE_WIDTH
            dropped += len(seg.pcm) - keep
            dropped_chunks.append(seg.pcm[keep:])
            seg.pcm = seg.pcm[:keep]
            break
        for chunk in reversed(dropped_chunks):
            self.dropped_pcm.extend(chunk)
        self.end = min(self.end, now)
        self.voice_end = min(self.voice_end, now)
        drop = Drop(now, dropped, self._seconds(dropped) * 1000.0)
        self.drops.append(drop)
        return drop

    def queued_ms(self, now: float) -> float:
        """Audio received but not yet played at `now`."""
        return max(0.0, self.end - now) * 1000.0

    def pcm(self) -> bytes:
        """Everything kept for playout (already played or still queued)."""
        return b"".join(seg.pcm for seg in self._segments)

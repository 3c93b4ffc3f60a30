"""A streaming resampler for one direction of one call (16-bit mono PCM in and out).

Why streaming: resampling each 20 ms frame on its own restarts the filter at every frame
edge and clicks 50 times a second; soxr's `ResampleStream` keeps the filter state across
chunks. One instance per direction per call; at equal rates it is a passthrough that never
touches numpy.

Quality: soxr "HQ" is the default. Its filter holds back some audio (about 35 ms going
24 -> 8 kHz, reported by `delay_ms`) and emits in blocks; the caller -> model direction does
not care, and the model -> caller direction calls `flush()` at the end of each agent item so
the tail is not stuck inside the filter. "QQ" (cubic, no anti-alias filter) emits sample for
sample with ~0 delay but aliases when downsampling; choose it only where latency matters
more than sound.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import soxr

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]
_EMPTY = np.zeros(0, dtype=np.int16)


class StreamResampler:
    """int16 little-endian mono bytes in, same out, at `out_rate`."""

    __slots__ = ("_closed", "_stream", "in_rate", "out_rate", "quality")

    def __init__(self, in_rate: int, out_rate: int, quality: Quality = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self._closed = False
        self._stream = (
            None if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    @property
    def passthrough(self) -> bool:
        return self._stream is None and not self._closed

    def process(self, pcm: bytes) -> bytes:
        """Resample one chunk. A trailing odd byte (a malformed frame) is dropped, never an
        error: carrying it over would shift every later sample by one byte."""
        if len(pcm) & 1:
            pcm = pcm[:-1]
        if self._stream is None:
            return b"" if self._closed else pcm
        if not pcm:
            return b""
        out = self._stream.resample_chunk(np.frombuffer(pcm, dtype="<i2"))
        return out.tobytes() if out.size else b""

    def flush(self) -> bytes:
        """Everything still inside the filter (end of an agent item); then start afresh."""
        if self._stream is None:
            return b""
        out = self._stream.resample_chunk(_EMPTY, last=True)
        self._stream.clear()
        return out.tobytes() if out.size else b""

    def close(self) -> None:
        """Free the filter's native buffers now (end of call); later chunks come out empty.
        Why: soxr memory is invisible to the GC's accounting, so an ended call's resampler
        must not wait for its owner to be collected."""
        self._stream = None
        self._closed = True

    def reset(self) -> None:
        """Forget buffered audio (barge-in: what is inside belongs to a cancelled item)."""
        if self._stream is not None:
            self._stream.clear()

    @property
    def delay_ms(self) -> float:
        """Audio currently held inside the filter, in ms of output."""
        if self._stream is None:
            return 0.0
        return float(self._stream.delay()) * 1000.0 / self.out_rate

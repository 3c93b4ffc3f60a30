"""StreamResampler: continuity across chunks, odd frames, flush, passthrough."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.shared.audio.resampler import StreamResampler
from callbridge.shared.pcm import rms


def _sine(rate: int, ms: int, freq: float = 440.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


def test_passthrough_at_equal_rates_returns_input() -> None:
    rs = StreamResampler(24000, 24000)
    frame = _sine(24000, 20)
    assert rs.passthrough
    assert rs.process(frame) is frame
    assert rs.flush() == b""
    assert rs.delay_ms == 0.0


@pytest.mark.parametrize(("src", "dst"), [(8000, 24000), (16000, 24000), (24000, 8000),
                                          (24000, 16000), (24000, 32000), (48000, 24000),
                                          (24000, 48000)])
def test_streamed_length_matches_rate_ratio(src: int, dst: int) -> None:
    rs = StreamResampler(src, dst)
    pcm = _sine(src, 1000)
    step = src * 20 // 1000 * 2
    out = b"".join(rs.process(pcm[i:i + step]) for i in range(0, len(pcm), step))
    out += rs.flush()
    assert abs(len(out) // 2 - dst) <= 2  # one second in, one second out
    assert rms(out) > 4000  # the sine survives (8000 peak -> ~5650 RMS)


def test_odd_and_empty_chunks_never_raise() -> None:
    rs = StreamResampler(16000, 24000)
    assert rs.process(b"") == b""
    assert rs.process(b"\x01") == b""
    out = rs.process(_sine(16000, 20) + b"\x07")  # trailing odd byte dropped
    assert len(out) % 2 == 0


def test_flush_empties_the_filter_and_allows_reuse() -> None:
    rs = StreamResampler(24000, 8000)
    pcm = _sine(24000, 200)
    first = rs.process(pcm) + rs.flush()
    second = rs.process(pcm) + rs.flush()
    assert len(first) == len(second) == 8000 * 200 // 1000 * 2


def test_reset_drops_buffered_audio() -> None:
    rs = StreamResampler(24000, 8000)
    rs.process(_sine(24000, 60))
    rs.reset()
    assert rs.flush() == b""

"""Generated sounds the gateway plays without the model: the hold chime and a notice tone.

Generated, not recorded, so the service ships no audio of the simulators and any call rate
gets an exact copy (no resampling). Levels are moderate (about -16 dBFS peak) with 10 ms
fades so nothing clicks.
"""

from __future__ import annotations

import numpy as np

_PEAK = 5200.0  # int16 units: clearly audible, never harsh
_FADE_MS = 10


def tone(freq_hz: float, ms: int, rate: int, peak: float = _PEAK) -> np.ndarray:
    """A sine burst with short linear fades, as int16 samples."""
    n = rate * ms // 1000
    t = np.arange(n, dtype=np.float64) / rate
    wave = np.sin(2.0 * np.pi * freq_hz * t) * peak
    fade = min(n // 2, rate * _FADE_MS // 1000)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[n - fade:] *= ramp[::-1]
    return wave.astype("<i2")


def _silence(ms: int, rate: int) -> np.ndarray:
    return np.zeros(rate * ms // 1000, dtype="<i2")


def hold_sound(rate: int, gap_ms: int = 800) -> bytes:
    """One period of the hold sound: a soft two-note chime then `gap_ms` of silence.

    The gateway loops it while the model is away; keep `gap_ms` below the hold limit so the
    caller never hears a silence longer than that (GATEWAY_HOLD_LIMIT_MS, README "Configuration").
    """
    parts = [tone(660.0, 160, rate), _silence(40, rate), tone(880.0, 220, rate),
             _silence(max(0, gap_ms), rate)]
    return np.concatenate(parts).tobytes()


def notice_tone(rate: int) -> bytes:
    """Three descending notes: the fallback when no spoken notice file is available."""
    parts = [tone(988.0, 200, rate), _silence(60, rate), tone(784.0, 200, rate),
             _silence(60, rate), tone(659.0, 300, rate), _silence(200, rate)]
    return np.concatenate(parts).tobytes()

"""Small pure helpers for 16-bit little-endian mono PCM (the format on both wires).

Streaming resampling and playout pacing for live calls belong in the gateway's audio
modules; these are the one-shot helpers the simulators, demo and tests share.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import soxr

from callbridge.shared.infobip_media import SAMPLE_WIDTH

__all__ = ["SAMPLE_WIDTH", "SILENCE_RMS", "is_silent", "ms_of", "read_wav", "resample", "rms",
           "samples", "silence", "write_wav"]
#: RMS (int16 units) below which a frame counts as silence; speech is in the thousands.
SILENCE_RMS = 200.0


def samples(pcm: bytes) -> np.ndarray:
    """int16 view; a trailing odd byte (malformed frame) is ignored, never an exception."""
    return np.frombuffer(pcm[: len(pcm) - (len(pcm) % 2)], dtype="<i2")


def rms(pcm: bytes) -> float:
    data = samples(pcm)
    if data.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(data.astype(np.float64) ** 2)))


def is_silent(pcm: bytes, threshold: float = SILENCE_RMS) -> bool:
    return rms(pcm) < threshold


def silence(ms: int, rate: int) -> bytes:
    return bytes(rate * ms // 1000 * SAMPLE_WIDTH)


def ms_of(pcm_len: int, rate: int) -> float:
    """Duration in ms of `pcm_len` bytes at `rate`."""
    return pcm_len / SAMPLE_WIDTH / rate * 1000.0


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """One-shot resample (whole clips). Live audio uses a streaming resampler instead."""
    if from_rate == to_rate:
        return pcm
    out = soxr.resample(samples(pcm), from_rate, to_rate, quality="HQ")
    return np.asarray(out, dtype="<i2").tobytes()


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """(pcm, rate) of a mono 16-bit WAV; anything else is a clear error."""
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != SAMPLE_WIDTH:
            raise ValueError(f"{path}: need mono 16-bit PCM, got {wav.getnchannels()} channels, "
                             f"{wav.getsampwidth() * 8}-bit")
        return wav.readframes(wav.getnframes()), wav.getframerate()


def write_wav(path: str | Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(rate)
        wav.writeframes(pcm)


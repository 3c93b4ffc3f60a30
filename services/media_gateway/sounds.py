"""Audio the gateway plays on its own, prepared once per call rate and cached.

Spoken notices are WAVs in `assets/` (see assets/README.md); a missing file degrades to a
generated notice tone rather than silence. The hold sound is generated
(`callbridge.shared.audio.tones.hold_sound`) with pauses kept under GATEWAY_HOLD_LIMIT_MS.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from callbridge.shared.audio.tones import hold_sound, notice_tone
from callbridge.shared.pcm import read_wav, resample

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
FALLBACK_TRANSFER = "fallback_transfer"
FALLBACK_GOODBYE = "fallback_goodbye"
MAX_DURATION = "max_duration"


@lru_cache(maxsize=32)
def notice(name: str, rate: int) -> bytes:
    """The spoken notice `name` at `rate` (16-bit mono), or a tone if the file is missing."""
    path = ASSETS / f"{name}.wav"
    try:
        pcm, file_rate = read_wav(path)
    except (OSError, ValueError, EOFError) as exc:
        log.warning("notice %s unavailable (%s): playing a tone instead", path.name, exc)
        return notice_tone(rate)
    return resample(pcm, file_rate, rate)


@lru_cache(maxsize=32)
def hold(rate: int, hold_limit_ms: int) -> bytes:
    """One period of the hold sound whose pause is well under the hold limit."""
    gap = max(100, min(800, hold_limit_ms - 400))
    return hold_sound(rate, gap_ms=gap)

"""Energy voice-activity detection on PCM16 (pure: bytes in, events out).

The live server_vad is a model; this is a plain RMS detector good enough to turn real speech
clips into turns. It honours the server_vad knobs (ref: the Realtime API reference (https://platform.openai.com/docs/api-reference/realtime)
"session.update"): `threshold` (0..1) maps to an RMS level, `prefix_padding_ms` moves the
reported start earlier, `silence_duration_ms` of quiet ends the turn. Times are milliseconds
of audio appended since the session began, as the live `audio_start_ms`/`audio_end_ms` are.
semantic_vad is approximated by a silence duration per `eagerness`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FRAME_MS = 10
#: Voiced frames needed in a row before speech counts as started (ignores clicks).
MIN_SPEECH_MS = 30
#: semantic_vad has no silence knob; these stand in for its eagerness (an approximation).
EAGERNESS_SILENCE_MS = {"high": 300, "medium": 600, "auto": 600, "low": 1000}


def rms_threshold(threshold: float) -> float:
    """Map the API's 0..1 threshold onto an int16 RMS level, log-scaled -60..-10 dBFS.

    0.5 (the default) is -35 dBFS, RMS ~580: above line noise and the quiet tails of words in
    our clips, well below speech (thousands). Higher thresholds need louder speech, as live.
    """
    t = min(max(threshold, 0.0), 1.0)
    return float(32768.0 * 10.0 ** ((-60.0 + 50.0 * t) / 20.0))


@dataclass(frozen=True)
class VadConfig:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 200

    @classmethod
    def from_turn_detection(cls, td: dict[str, Any]) -> VadConfig:
        if td.get("type") == "semantic_vad":
            silence = EAGERNESS_SILENCE_MS.get(str(td.get("eagerness", "auto")), 600)
            return cls(0.5, 300, silence)
        return cls(float(td.get("threshold", 0.5)), int(td.get("prefix_padding_ms", 300)),
                   int(td.get("silence_duration_ms", 200)))


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    audio_start_ms: int
    audio_end_ms: int


VadEvent = SpeechStarted | SpeechStopped


class EnergyVad:
    """Feed PCM16 chunks of any size; get speech start/stop events in audio time."""

    def __init__(self, config: VadConfig, rate: int = 24000) -> None:
        self.rate = rate
        self._frame_bytes = rate * FRAME_MS // 1000 * 2
        self._rest = b""
        self._frames = 0  # frames processed since the session began
        self._floor_frame = 0  # the input buffer's start (last commit/clear)
        self.configure(config)
        self._reset_turn()

    def configure(self, config: VadConfig) -> None:
        self.config = config
        level = rms_threshold(config.threshold)
        # energy >= level  <=>  sum of squares >= level^2 * samples (no sqrt, no mean)
        self._power_level = level * level * (self._frame_bytes // 2)
        self._min_run = max(1, MIN_SPEECH_MS // FRAME_MS)
        self._stop_frames = max(1, -(-config.silence_duration_ms // FRAME_MS))

    def _reset_turn(self) -> None:
        self.in_speech = False
        self._run = 0
        self._run_start = 0
        self._silence = 0
        self._start_ms = 0
        self._last_voiced_end = 0

    @property
    def position_ms(self) -> int:
        return self._frames * FRAME_MS

    def reset(self) -> None:
        """Input buffer cleared or committed by the client: forget the turn in progress."""
        self._rest = b""
        self._floor_frame = self._frames
        self._reset_turn()

    def feed(self, pcm: bytes) -> list[VadEvent]:
        data = self._rest + pcm if self._rest else pcm
        n = len(data) // self._frame_bytes
        if n == 0:
            self._rest = data
            return []
        used = n * self._frame_bytes
        self._rest = data[used:]
        frames = np.frombuffer(data, dtype="<i2", count=used // 2).astype(np.float32)
        frames = frames.reshape(n, -1)
        # (f*f).sum: a third of np.mean's cost for one 20 ms append (bench/gateway runs
        # hundreds of calls through this simulator on one core).
        power = (frames * frames).sum(axis=1)
        events: list[VadEvent] = []
        for voiced in (power >= self._power_level).tolist():
            self._step(voiced, events)
            self._frames += 1
        return events

    def _step(self, voiced: bool, events: list[VadEvent]) -> None:
        i = self._frames
        if not self.in_speech:
            if not voiced:
                self._run = 0
                return
            if self._run == 0:
                self._run_start = i
            self._run += 1
            if self._run >= self._min_run:
                self.in_speech = True
                self._silence = 0
                self._last_voiced_end = i + 1
                start = max(self._floor_frame * FRAME_MS,
                            self._run_start * FRAME_MS - self.config.prefix_padding_ms)
                self._start_ms = start
                events.append(SpeechStarted(start))
            return
        if voiced:
            self._silence = 0
            self._last_voiced_end = i + 1
            return
        self._silence += 1
        if self._silence >= self._stop_frames:
            events.append(SpeechStopped(self._start_ms, self._last_voiced_end * FRAME_MS))
            self._floor_frame = i + 1
            self._reset_turn()

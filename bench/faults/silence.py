"""What the caller heard, measured from the Infobip simulator's record of received frames.

Two measures (README.md, "Longest caller silence"):

- `silence_in(leg, start, end)`: on the caller's playout clock — each received 20 ms frame
  plays at max(its arrival, the end of the frame before it), as Infobip plays a stream — the
  longest stretch inside [start, end] during which nothing audible played (no frame at all,
  or frames under `callbridge.shared.pcm.is_silent`'s threshold). Used from a fault that hit a live
  call until the call recovered (the agent heard again) or ended: it is the gap the fault caused.
- `max_frame_gap(leg, start, end)`: the longest time between two consecutive received frames
  while the leg was open. The gateway streams a steady 20 ms stream (silence filler
  included: shared/audio/playout.py), so anything above ~40 ms means the line went dead.
  Used for calls a fault should not disturb at all (drained, bystanders, Redis at maxmemory).
"""

from __future__ import annotations

import itertools

from callbridge.shared.infobip_media import FRAME_MS
from callbridge.shared.pcm import is_silent
from callbridge.simulators.infobip import MediaLeg

_FRAME_S = FRAME_MS / 1000.0


def audible_spans(leg: MediaLeg) -> list[tuple[float, float]]:
    """(start, end) unix times of audible playout, adjacent frames merged."""
    spans: list[tuple[float, float]] = []
    end = 0.0
    for arrival, frame in list(leg.frames):
        dur = len(frame) / 2 / leg.sample_rate if leg.sample_rate else _FRAME_S
        start = max(arrival, end)
        end = start + dur
        if is_silent(frame):
            continue
        if spans and start - spans[-1][1] < 1e-3:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def silence_in(leg: MediaLeg, start: float, end: float) -> float:
    """Longest inaudible stretch (ms) inside [start, end] (see module doc)."""
    if end <= start:
        return 0.0
    cursor = start
    longest = 0.0
    for s, e in audible_spans(leg):
        if e <= cursor:
            continue
        if s >= end:
            break
        longest = max(longest, s - cursor)
        cursor = max(cursor, e)
        if cursor >= end:
            break
    longest = max(longest, end - cursor)
    return round(longest * 1000.0, 1)


def first_audible_after(leg: MediaLeg, t: float) -> float | None:
    """When audible playout first starts at or after `t` (None if never)."""
    for s, e in audible_spans(leg):
        if e > t:
            return max(s, t)
    return None


def max_frame_gap(leg: MediaLeg, start: float = 0.0, end: float = float("inf")) -> float:
    """Longest gap (ms) between consecutive received frames arriving inside [start, end]."""
    times = [t for t, _ in list(leg.frames) if start <= t <= end]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return round(max(gaps, default=0.0) * 1000.0, 1)

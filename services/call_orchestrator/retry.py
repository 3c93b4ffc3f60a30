"""When to try a failed job again: exponential backoff with full jitter, Retry-After a floor.

Full jitter (delay uniform in [0, min(cap, base * 2**attempt)]) spreads the retries of many
jobs that failed together (a Calls API storm) instead of sending them back in lock-step.
A `Retry-After` the platform gave is a floor, never shortened by the jitter: the reference
(Infobip's Calls API reference (https://www.infobip.com/docs/api), "Errors") says to back off
exponentially on 429 and
honour Retry-After when present. A small margin absorbs clock and timer granularity.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Added to a Retry-After so timer granularity never brings a request in early.
RETRY_AFTER_MARGIN_S = 0.05


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 0.5
    cap_s: float = 30.0
    max_attempts: int = 8

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter delay after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.cap_s, self.base_s * (2 ** max(0, attempt - 1)))
        return (rng or random).uniform(0.0, ceiling)

    def delay(self, attempt: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1`: jittered backoff, at least the
        server's Retry-After (plus a margin) when it gave one."""
        delay = self.backoff(attempt, rng)
        if retry_after is not None and retry_after >= 0:
            delay = max(delay, retry_after + RETRY_AFTER_MARGIN_S)
        return delay

    def exhausted(self, attempt: int) -> bool:
        """True when attempt number `attempt` was the last one allowed."""
        return attempt >= self.max_attempts

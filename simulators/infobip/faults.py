"""Fault injection for the simulated Calls API: failures, slow answers, storms, Retry-After.

Why: the orchestrator must survive what the real platform does under load — 429 when
throttled (20 dialog requests/s), 5xx, slow answers — and must not hammer it while it asked
for patience. Errors carry Infobip's ApiException body (`http_common.error_body`, checked
against the published spec like every answer). A `Retry-After` header is *unverified* for
the real platform; when a fault announces one, the simulator remembers it per client and
path and counts any request that comes back earlier in `early_retries`.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from .http_common import error_body

#: Tolerance for timer granularity when judging "arrived before its Retry-After".
EARLY_TOLERANCE_S = 0.02

_MESSAGE_IDS = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
                429: "TOO_MANY_REQUESTS"}


def message_id_for(status: int) -> str:
    """Infobip messageId for an HTTP status: GENERAL_ERROR for anything 5xx or unknown."""
    return _MESSAGE_IDS.get(status, "GENERAL_ERROR")


def fault_body(status: int) -> dict[str, Any]:
    return error_body(message_id_for(status), f"simulated fault: HTTP {status}")


@dataclass(frozen=True)
class FaultDecision:
    """What to do with one request: answer `status` (None = handle normally) after `delay_s`."""

    status: int | None = None
    retry_after: float | None = None
    delay_s: float = 0.0

    @property
    def faulted(self) -> bool:
        return self.status is not None or self.delay_s > 0


@dataclass
class _Rule:
    remaining: int
    path_prefix: str
    status: int | None = None
    retry_after: float | None = None
    delay_s: float = 0.0


@dataclass
class _Storm:
    ratio: float
    statuses: tuple[int, ...]
    retry_after: float | None
    until: float
    path_prefix: str
    rng: random.Random


@dataclass(frozen=True)
class EarlyRetry:
    """A request that arrived before the Retry-After announced to its client had elapsed."""

    method: str
    path: str
    client: str
    at: float              # time.time() of arrival
    allowed_at: float      # time.time() from which the client was allowed back
    early_by_s: float


@dataclass
class Faults:
    """Rules consulted by the API middleware for each authorised request, in order:
    `fail_next` rules, then `delay_next` rules, then an active `fail_ratio` storm."""

    _fails: list[_Rule] = field(default_factory=list)
    _delays: list[_Rule] = field(default_factory=list)
    _storm: _Storm | None = None
    _retry_until: dict[tuple[str, str], float] = field(default_factory=dict)
    early_retries: list[EarlyRetry] = field(default_factory=list)

    def fail_next(self, n: int, status: int = 500, retry_after: float | None = None,
                  path_prefix: str = "/calls/1/dialogs") -> None:
        """Answer the next `n` matching requests with `status` and Infobip's error body
        (TOO_MANY_REQUESTS for 429, BAD_REQUEST for 400, GENERAL_ERROR for 5xx). The request
        has no effect. `retry_after` (seconds) adds a `Retry-After` header (a fractional
        value is sent as is: not standard HTTP, but it keeps fault tests fast)."""
        self._fails.append(_Rule(n, path_prefix, status=status, retry_after=retry_after))

    def delay_next(self, n: int, seconds: float, path_prefix: str = "/calls/1/dialogs") -> None:
        """Delay the answer of the next `n` matching requests by `seconds`. The request is
        processed AFTER the delay and takes effect even if the client gave up meanwhile (a
        slow real server): a client that times out and retries creates a duplicate unless it
        is idempotent — exactly what this fault is for."""
        self._delays.append(_Rule(n, path_prefix, delay_s=seconds))

    def fail_ratio(self, ratio: float, statuses: tuple[int, ...] | list[int] = (500,),
                   retry_after: float | None = None, duration_s: float = 10.0,
                   seed: int | None = None, path_prefix: str = "/calls/1/") -> None:
        """A storm: for `duration_s` from now each matching request fails with probability
        `ratio`, its status drawn from `statuses` (seeded, so a failing test replays)."""
        self._storm = _Storm(ratio, tuple(statuses), retry_after, time.monotonic() + duration_s,
                             path_prefix, random.Random(seed))

    def clear(self) -> None:
        self._fails.clear()
        self._delays.clear()
        self._storm = None

    def decide(self, path: str) -> FaultDecision:
        """Consume the first matching rule(s) for a request on `path`."""
        delay = 0.0
        for rule in self._delays:
            if rule.remaining > 0 and path.startswith(rule.path_prefix):
                rule.remaining -= 1
                delay = rule.delay_s
                break
        for rule in self._fails:
            if rule.remaining > 0 and path.startswith(rule.path_prefix):
                rule.remaining -= 1
                return FaultDecision(rule.status, rule.retry_after, delay)
        storm = self._storm
        if storm is not None and time.monotonic() < storm.until and path.startswith(
                storm.path_prefix) and storm.rng.random() < storm.ratio:
            return FaultDecision(storm.rng.choice(storm.statuses), storm.retry_after, delay)
        return FaultDecision(None, None, delay)

    # --- Retry-After bookkeeping -------------------------------------------------------

    def announce_retry_after(self, client: str, path: str, seconds: float) -> None:
        """Remember that `client` was told to wait `seconds` before calling `path` again."""
        self._retry_until[(client, path)] = time.time() + seconds

    def check_arrival(self, client: str, method: str, path: str, at: float) -> bool:
        """Record and return True when this request is earlier than an announced Retry-After.
        Keyed by client (its API key) and path: a retry of the same request hits the same
        path, and every dialog creation shares one path, matching the platform's per-account
        throttle (20 dialog requests/s) -- other paths are not held against the client."""
        allowed_at = self._retry_until.get((client, path))
        if allowed_at is None or at >= allowed_at - EARLY_TOLERANCE_S:
            return False
        self.early_retries.append(
            EarlyRetry(method, path, client, at, allowed_at, round(allowed_at - at, 3)))
        return True

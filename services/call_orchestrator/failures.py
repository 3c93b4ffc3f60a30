"""The one base of every failure a job may raise, and what the retry loop reads from it.

A job's retry decision needs three facts about a failure: may a retry help (`retryable`),
may the request have taken effect anyway (`ambiguous`: a dialog POST that timed out may have
created the dialog), and how long the other side asked us to wait (`retry_after`, seconds).
Every failure the orchestrator raises on purpose carries them as typed attributes; anything
else (a bug, a Redis error) is treated as retryable and ambiguous.
"""

from __future__ import annotations


class JobFailure(Exception):
    """Base of the orchestrator's own failures (Calls API answers, held claims, bad input)."""

    retryable: bool = True
    ambiguous: bool = True
    retry_after: float | None = None


class FinalError(JobFailure):
    """A failure no retry can fix (bad event body, ...)."""

    retryable = False
    ambiguous = False

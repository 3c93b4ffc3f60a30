"""The arq job functions, each wrapped in the same retry / dead-letter machinery.

`handle_event(ctx, entry)` (entry: stream_id, type, call_id, body, received_at),
`hangup_call(ctx, call_id, reason)` and `transfer_call(ctx, call_id, reason)` (the
gateway's contract, shared/jobs.py). Every failure is classified:
- retryable (connection errors, timeouts, 5xx, 429, Redis trouble, anything unexpected):
  `Retry(defer=backoff with full jitter, at least Retry-After)` until
  ORCHESTRATOR_RETRY_MAX_ATTEMPTS, then a dead letter;
- final (other 4xx, a body that does not parse): a dead letter at once;
- a claim held by a live owner: retried after that owner's lease, outside the budget.
arq's own `max_tries` is set far above ours so it never drops a job without a dead letter,
and each attempt has its own deadline below arq's job timeout (arq would *fail* a job that
hits its timeout, not retry it).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from arq.worker import Retry
from pydantic import ValidationError

from callbridge.shared.infobip_events import CallsEvent, EventType
from callbridge.shared.jobs import HANDLE_EVENT, HANGUP_CALL, REBRIDGE_CALL, TRANSFER_CALL, job_id
from callbridge.shared.logging_setup import call_id_var

from . import actions, dead_letters, handlers, rebridge
from .calls_api import ApiError, CallsApiFailure
from .dialogs import ClaimHeld
from .failures import FinalError, JobFailure
from .metrics import JOBS, RETRIES
from .runtime import Runtime

log = logging.getLogger(__name__)

#: arq's limit, far above ours: our budget decides, arq never drops a job silently.
ARQ_MAX_TRIES = 1000


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status} {exc.message_id}: {exc.text}".strip()
    return f"{type(exc).__name__}: {exc}"


def _retry_reason(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return str(exc.status)
    if isinstance(exc, CallsApiFailure):
        return type(exc).__name__.lower()
    return "error"


async def _guarded(ctx: dict[str, Any], job: str, call_id: str, args: list[Any],
                   run: Callable[[Runtime, str], Awaitable[str]], event: str = "",
                   stream_id: str = "", event_type: str = "") -> str:
    rt: Runtime = ctx["rt"]
    attempt = int(ctx.get("job_try") or 1)
    this_job_id = str(ctx.get("job_id") or job)
    token = call_id_var.set(call_id or None)
    try:
        deadline = max(1.0, rt.settings.orchestrator_job_timeout_s - 1.0)
        async with asyncio.timeout(deadline):
            outcome = await run(rt, f"{this_job_id}@{attempt}")
        JOBS.labels(job, outcome).inc()
        return outcome
    except ClaimHeld as exc:
        RETRIES.labels(job, "claim_held").inc()
        raise Retry(defer=(exc.retry_after or 0) + random.uniform(0.05, 0.5)) from exc
    except Exception as exc:
        if isinstance(exc, JobFailure):
            retryable, retry_after = exc.retryable, exc.retry_after
        else:  # not ours: a bug or an outage; a malformed body will not parse next time either
            retryable, retry_after = not isinstance(exc, ValidationError), None
        if retryable and not rt.policy.exhausted(attempt):
            delay = rt.policy.delay(attempt, retry_after)
            RETRIES.labels(job, _retry_reason(exc)).inc()
            JOBS.labels(job, "retry").inc()
            log.warning("attempt %d failed (%s); retrying in %.2fs", attempt, _describe(exc),
                        delay)
            raise Retry(defer=delay) from exc
        # Dialog events name their call only inside the body: the handler set it.
        call_id = call_id or call_id_var.get() or ""
        await dead_letters.add(rt.redis, job=job, job_id=this_job_id, call_id=call_id,
                               attempts=attempt, error=_describe(exc), args=args, event=event,
                               stream_id=stream_id)
        JOBS.labels(job, "dead_letter").inc()
        log.error("dead-lettered after %d attempt(s): %s", attempt, _describe(exc))
        await _fallback(rt, job, call_id, event_type)
        return "dead_letter"
    finally:
        call_id_var.reset(token)


async def _fallback(rt: Runtime, job: str, call_id: str, event_type: str) -> None:
    """A caller must not be left ringing or in silence because a job died: a dead bridge
    becomes a transfer/hangup, a dead transfer a hangup."""
    if not call_id:
        return
    try:
        if job == HANDLE_EVENT and event_type == EventType.CALL_RECEIVED:
            await rt.enqueue(TRANSFER_CALL, call_id, "bridge_failed",
                             job_id=job_id(TRANSFER_CALL, call_id))
        elif job == REBRIDGE_CALL:
            await rebridge.fall_back(rt, call_id, "rebridge_failed")
        elif job == TRANSFER_CALL:
            await rt.enqueue(HANGUP_CALL, call_id, "transfer_failed",
                             job_id=job_id(HANGUP_CALL, call_id) + ":fallback")
    except Exception:
        log.exception("could not enqueue the fallback for a dead-lettered %s", job)


async def handle_event(ctx: dict[str, Any], entry: dict[str, str]) -> str:
    body = entry.get("body", "")

    async def run(rt: Runtime, owner: str) -> str:
        try:
            event = CallsEvent.model_validate_json(body)
        except ValidationError as exc:
            raise FinalError(f"event body does not parse: {exc.error_count()} error(s)") from exc
        return await handlers.handle_event(rt, event, entry.get("received_at", ""), owner)

    return await _guarded(ctx, HANDLE_EVENT, entry.get("call_id", ""), [entry], run,
                          event=body, stream_id=entry.get("stream_id", ""),
                          event_type=entry.get("type", ""))


async def hangup_call(ctx: dict[str, Any], call_id: str, reason: str) -> str:
    async def run(rt: Runtime, owner: str) -> str:
        return await actions.hangup(rt, call_id, reason)

    return await _guarded(ctx, HANGUP_CALL, call_id, [call_id, reason], run)


async def transfer_call(ctx: dict[str, Any], call_id: str, reason: str) -> str:
    async def run(rt: Runtime, owner: str) -> str:
        return await actions.transfer(rt, call_id, reason, owner)

    return await _guarded(ctx, TRANSFER_CALL, call_id, [call_id, reason], run)


async def rebridge_call(ctx: dict[str, Any], call_id: str, from_generation: str,
                        reason: str) -> str:
    async def run(rt: Runtime, owner: str) -> str:
        return await rebridge.rebridge(rt, call_id, int(from_generation), reason, owner)

    return await _guarded(ctx, REBRIDGE_CALL, call_id, [call_id, from_generation, reason], run)

"""HTTP handlers: POST webhook, /healthz, /readyz, /metrics.

The webhook handler is a straight line: who is sending (allowlist, Basic) -> bounded body
-> HMAC -> size -> content type -> envelope -> XADD (coalesced) -> 200 with the entry id.
Every refusal is a JSON `{"error": <code>, "detail": <what to fix>}`; bodies refused for
their *content* (not for auth) go best-effort to the bounded rejected stream.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from callbridge.services.webhook_ingress.appender import AppendFailed
from callbridge.services.webhook_ingress.auth import Refusal
from callbridge.services.webhook_ingress.state import STATE, IngressState
from callbridge.services.webhook_ingress.validation import (
    KNOWN_EVENT_TYPES,
    Accepted,
    BodyTimeout,
    Problem,
    check_content_type,
    event_too_large,
    parse_event,
    read_bounded,
    too_large,
)
from callbridge.shared import health, redis_keys
from callbridge.shared.logging_setup import call_id_var

log = logging.getLogger(__name__)


def error_response(status: int, code: str, detail: str,
                   headers: tuple[tuple[str, str], ...] = (), close: bool = False) -> web.Response:
    response = web.Response(status=status, content_type="application/json",
                            body=orjson.dumps({"error": code, "detail": detail}))
    for name, value in headers:
        response.headers[name] = value
    if close:
        response.force_close()
    return response


def _refused(refusal: Refusal) -> web.Response:
    return error_response(refusal.status, refusal.code, refusal.detail, refusal.headers)


async def webhook(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    metrics = state.metrics
    metrics.in_flight += 1
    try:
        response = await _webhook(state, request)
    except Exception:  # a bug: answer (and count) a controlled 500, keep serving
        log.exception("webhook handler failed")
        response = error_response(500, "internal_error", "unexpected error; please retry")
    finally:
        metrics.in_flight -= 1
    metrics.count(response.status)
    return response


async def _webhook(state: IngressState, request: web.Request) -> web.Response:
    settings = state.settings
    auth = state.auth
    headers = request.headers
    refusal = auth.check_peer(request.remote, headers)
    if refusal is not None:
        log.info("webhook refused", extra={"reason": refusal.code, "remote": request.remote})
        return _refused(refusal)

    limit = settings.ingress_max_body_bytes
    declared = request.content_length
    try:
        if declared is not None and declared > limit and auth.needs_body:
            body, over = b"", True  # cannot be verified, will not be stored: do not read it
        else:
            body, over = await read_bounded(request.content, limit,
                                            settings.ingress_body_timeout_s)
    except BodyTimeout:
        return error_response(408, "body_timeout",
                              f"the body did not arrive within {settings.ingress_body_timeout_s}s",
                              close=True)
    if auth.needs_body:
        if over:
            # Too large to verify its signature: answered, not stored (unauthenticated).
            problem = too_large(limit)
            return error_response(problem.status, problem.code, problem.detail, close=True)
        refusal = auth.check_body(headers, body)
        if refusal is not None:
            log.info("webhook refused", extra={"reason": refusal.code,
                                               "remote": request.remote})
            return _refused(refusal)

    outcome: Accepted | Problem | None
    if over:
        outcome = too_large(limit)
    else:
        outcome = check_content_type(request.content_type, headers.get("Content-Encoding"))
        if outcome is None:
            outcome = parse_event(body)
        if isinstance(outcome, Accepted):
            type_limit = settings.event_max_bytes(outcome.type,
                                                  outcome.type in KNOWN_EVENT_TYPES)
            if len(body) > type_limit:
                outcome = event_too_large(outcome.type, len(body), type_limit)
    if isinstance(outcome, Problem):
        _store_rejected(state, request, body, outcome)
        return error_response(outcome.status, outcome.code, outcome.detail,
                              close=outcome.status == 413)
    assert outcome is not None
    return await _store_event(state, body, outcome)


async def _store_event(state: IngressState, body: bytes, event: Accepted) -> web.Response:
    appender = state.appender
    retry = (("Retry-After", str(state.settings.ingress_retry_after_s)),)
    if appender is None:
        return error_response(503, "storage_unavailable", "the ingress is not started", retry)
    token = call_id_var.set(event.call_id or None)
    try:
        entry_id = await appender.append(redis_keys.EVENTS_STREAM, {
            "body": body,
            "type": event.type,
            "call_id": event.call_id,
            "received_at": str(time.time_ns() // 1_000_000),
        }, state.events_trim)
    except AppendFailed as exc:
        log.warning("event not stored, answered 503", extra={
            "reason": exc.reason, "event_type": event.type})
        return error_response(
            503, "storage_unavailable",
            f"the event could not be stored ({exc.reason}); nothing was acknowledged, send it "
            "again after Retry-After", retry)
    finally:
        call_id_var.reset(token)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("event stored", extra={"call_id": event.call_id, "event_type": event.type,
                                         "entry_id": entry_id.decode()})
    return web.Response(content_type="application/json",
                        body=b'{"status":"accepted","id":"' + entry_id + b'"}')


def _store_rejected(state: IngressState, request: web.Request, body: bytes,
                    problem: Problem) -> None:
    """Best effort, for forensics: never awaits, never raises into the response."""
    appender = state.appender
    log.info("webhook rejected", extra={"reason": problem.code, "remote": request.remote,
                                        "status": problem.status})
    if appender is None:
        return
    # A sample for forensics, not the whole body: REJECTED_MAXLEN x the unknown-event
    # bound stays small, where x INGRESS_MAX_BODY_BYTES would be a memory lever.
    sample = body[:state.settings.ingress_unknown_event_max_bytes]
    queued = appender.append_nowait(redis_keys.REJECTED_STREAM, {
        "body": sample,
        "reason": problem.code,
        "status": str(problem.status),
        "detail": problem.detail[:500],
        "content_type": request.headers.get("Content-Type", "")[:200],
        "remote": request.remote or "",
        "received_at": str(time.time_ns() // 1_000_000),
    }, state.rejected_trim)
    if queued:
        state.metrics.rejected_stored += 1


def _answer(probe: health.ProbeAnswer) -> web.Response:
    return web.Response(status=probe.status, body=probe.body,
                        headers={"Content-Type": probe.content_type})


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process and its event loop answer. Says nothing about Redis."""
    return _answer(health.alive())


async def readyz(request: web.Request) -> web.Response:
    """Readiness: Redis answers PING within the bound and we are not shutting down."""
    return _answer(await _readiness(request.app[STATE]))


async def _readiness(state: IngressState) -> health.ProbeAnswer:
    if state.shutting_down:
        return health.not_ready("shutting_down")
    client = state.redis
    if client is None:
        return health.not_ready("not_started")
    try:
        async with asyncio.timeout(state.settings.ingress_ready_timeout_s):
            await client.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        return health.not_ready("redis_unreachable", detail=type(exc).__name__)
    return health.ready()


async def metrics(request: web.Request) -> web.Response:
    return _answer(health.metrics(request.app[STATE].metrics.registry))

"""`create_app(settings)`: the one aiohttp application the CLI, the tests and the benchmark
all start. Lifecycle lives in one place: the Redis pool and the appender are opened and
closed by a single cleanup_ctx generator (aiohttp's recommended shape).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from callbridge.services.webhook_ingress import handlers
from callbridge.services.webhook_ingress.appender import StreamAppender, Trim
from callbridge.services.webhook_ingress.auth import Authenticator
from callbridge.services.webhook_ingress.config import IngressSettings
from callbridge.services.webhook_ingress.metrics import IngressMetrics
from callbridge.services.webhook_ingress.state import SETTINGS, STATE, IngressState

__all__ = ["SETTINGS", "STATE", "IngressState", "PersistenceError", "create_app",
           "redis_client"]

log = logging.getLogger(__name__)


class PersistenceError(RuntimeError):
    """Redis would lose acknowledged events on a restart (or we cannot tell): do not start."""


def redis_client(settings: IngressSettings) -> aioredis.Redis:
    """A pool whose every wait is bounded, so Redis down means 503 fast, not a hung client.

    One retry on a connection error replaces a pooled socket that died with a Redis restart;
    it may resend an XADD whose reply was lost, which is a duplicate, never a loss."""
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=min(1.0, settings.ingress_append_timeout_s),
        socket_timeout=settings.ingress_append_timeout_s,
        max_connections=settings.ingress_redis_max_connections,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
        health_check_interval=0,
    )


async def redis_persistence(client: aioredis.Redis) -> str:
    """`CONFIG GET appendonly`: "yes", "no", or "unknown" when CONFIG is disabled or renamed
    (managed Redis services often do that: https://redis.io/docs/latest/operate/oss_and_stack/management/security/#disallowing-specific-commands)."""
    try:
        reply = await client.config_get("appendonly")
    except ResponseError:
        return "unknown"
    value = reply.get("appendonly")
    if isinstance(value, bytes):
        value = value.decode()
    return value if value in ("yes", "no") else "unknown"


async def check_persistence(client: aioredis.Redis, settings: IngressSettings) -> None:
    """Refuse to acknowledge into a Redis that forgets on restart, unless told otherwise.

    A 200 tells Infobip it need not retry; without AOF every event acknowledged since the
    last snapshot dies with a Redis restart (https://redis.io/docs/latest/operate/oss_and_stack/management/persistence/).
    Redis unreachable at start is not this check's business: requests get 503 until it is
    back, and the check is not repeated then (a restarted Redis keeps its configuration)."""
    if not settings.ingress_require_aof:
        log.warning("INGRESS_REQUIRE_AOF=false: Redis persistence is not checked; events "
                    "acknowledged with 200 may be lost if Redis restarts without AOF")
        return
    try:
        mode = await redis_persistence(client)
    except (RedisError, OSError) as exc:
        log.warning("could not check Redis persistence at start (%s); webhooks answer 503 "
                    "until Redis is reachable", type(exc).__name__)
        return
    if mode == "yes":
        return
    if mode == "no":
        raise PersistenceError(
            "Redis has AOF off (appendonly no): every acknowledged event would be lost on a "
            "Redis restart. Turn it on (redis-server --appendonly yes, or CONFIG SET "
            "appendonly yes and persist it in redis.conf), or set INGRESS_REQUIRE_AOF=false "
            "to accept that loss")
    raise PersistenceError(
        "cannot tell whether Redis persists: CONFIG GET appendonly is disabled or renamed on "
        "this server. Make sure AOF is on (appendonly yes) and then set "
        "INGRESS_REQUIRE_AOF=false to start without the check")


def _warn_insecure_choices(settings: IngressSettings) -> None:
    """Every start, so an insecure setting never goes unnoticed in the logs."""
    if not settings.webhook_authenticated:
        log.warning("WEBHOOK_ALLOW_UNAUTHENTICATED=true: webhooks are NOT authenticated; "
                    "anyone who reaches %s may post call events (set WEBHOOK_BASIC_* or "
                    "WEBHOOK_HMAC_SECRET)", settings.webhook_path)


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    settings = state.settings
    _warn_insecure_choices(settings)
    client = redis_client(settings)
    try:
        await check_persistence(client, settings)
    except BaseException:
        await client.aclose()
        raise
    appender = StreamAppender(
        client,
        timeout_s=settings.ingress_append_timeout_s,
        coalesce=settings.ingress_coalesce,
        max_batch=settings.ingress_max_batch,
        max_pending=settings.ingress_max_pending,
        observer=state.metrics.observe_flush,
    )
    state.redis = client
    state.appender = appender
    state.metrics.appender_stats = appender.stats
    try:
        yield
    finally:
        # Runs after aiohttp finished the in-flight requests (AppRunner.cleanup order), so
        # their appends have been flushed already; anything left is flushed (bounded) here.
        state.appender = None
        await appender.aclose()
        state.redis = None
        await client.aclose()


def create_app(settings: IngressSettings) -> web.Application:
    app = web.Application(
        # aiohttp's own bound for request.read()/post(); the webhook reads with its own
        # bounded reader (validation.read_bounded) so it can answer a JSON 413.
        client_max_size=settings.ingress_max_body_bytes,
        handler_args={
            "keepalive_timeout": settings.ingress_keepalive_timeout_s,
            # Keep bodies exactly as received; gzip bodies get 415 (validation.py).
            "auto_decompress": False,
            # After an early 413 do not keep reading a huge body for long.
            "lingering_time": 2.0,
        },
    )
    app[SETTINGS] = settings
    app[STATE] = IngressState(
        settings=settings,
        auth=Authenticator(settings),
        metrics=IngressMetrics(),
        events_trim=Trim(maxlen=settings.events_maxlen,
                         max_age_ms=settings.events_max_age_s * 1000),
        rejected_trim=Trim(maxlen=settings.rejected_maxlen),
    )
    app.cleanup_ctx.append(_redis_ctx)
    app.router.add_post(settings.webhook_path, handlers.webhook)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    return app

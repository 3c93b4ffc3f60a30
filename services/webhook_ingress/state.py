"""Per-app runtime state and its typed app keys (aiohttp's `web.AppKey`).

One `IngressState` per application: handlers reach everything through `request.app[STATE]`.
The Redis client and the appender are created and closed by the app's cleanup_ctx
(services/webhook_ingress/app.py), so they are None before start-up and after clean-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from callbridge.services.webhook_ingress.appender import StreamAppender, Trim
from callbridge.services.webhook_ingress.auth import Authenticator
from callbridge.services.webhook_ingress.config import IngressSettings
from callbridge.services.webhook_ingress.metrics import IngressMetrics


@dataclass
class IngressState:
    settings: IngressSettings
    auth: Authenticator
    metrics: IngressMetrics
    events_trim: Trim
    rejected_trim: Trim
    redis: aioredis.Redis | None = None
    appender: StreamAppender | None = None
    #: Set first thing on SIGTERM: /readyz answers 503 so the load balancer drains us.
    shutting_down: bool = False


SETTINGS = web.AppKey("settings", IngressSettings)
STATE = web.AppKey("ingress_state", IngressState)

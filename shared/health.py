"""What /healthz, /readyz and /metrics answer, the same in every service.

The ingress and the orchestrator serve them with aiohttp, the gateway on its media port
through websockets' `process_request`; each server only turns a `ProbeAnswer` into its own
response type, so the three answer alike and a load balancer or Kubernetes probe reads them
the same way:

- GET /healthz: 200 `{"status": "ok"}` while the process and its event loop answer.
- GET /readyz: 200 `{"ready": true}`, or 503 `{"ready": false, "reason": "..."}` (plus
  detail fields) while it must not get new work (draining, Redis unreachable, at capacity).
- GET /metrics: the Prometheus text exposition format,
  https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

HEALTHZ, READYZ, METRICS = "/healthz", "/readyz", "/metrics"
JSON = "application/json"


@dataclass(frozen=True)
class ProbeAnswer:
    status: int
    content_type: str
    body: bytes


def alive() -> ProbeAnswer:
    return ProbeAnswer(200, JSON, orjson.dumps({"status": "ok"}))


def ready() -> ProbeAnswer:
    return ProbeAnswer(200, JSON, orjson.dumps({"ready": True}))


def not_ready(reason: str, **detail: Any) -> ProbeAnswer:
    """503 with a fixed-vocabulary `reason` (shutting_down, redis_unreachable, ...)."""
    return ProbeAnswer(503, JSON, orjson.dumps({"ready": False, "reason": reason, **detail}))


def metrics(registry: CollectorRegistry | None = None) -> ProbeAnswer:
    """The exposition of `registry` (the process-wide default registry when None)."""
    return ProbeAnswer(200, CONTENT_TYPE_LATEST, generate_latest(registry or REGISTRY))

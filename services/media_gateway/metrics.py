"""Prometheus metrics of the media gateway, served on GET /metrics (same port as media).

Module-level objects in the default registry: one gateway per process in production; tests
that start several gateways in one process share them, so tests read deltas, not totals.

Every label value comes from a fixed set defined in code (an enum here, or the code's own
constants), never from what a peer sent: a label per distinct reason text or per model
error string is a new time series each, which an attacker could grow without bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from enum import StrEnum

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from callbridge.shared import realtime_events as rt

_NS = "callbridge_gateway"
# Relay latency is sub-millisecond when healthy; the interesting tail is 1-50 ms.
_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)

ACTIVE_SESSIONS = Gauge(f"{_NS}_active_sessions", "Media sessions in progress")
SESSIONS = Counter(f"{_NS}_sessions_total", "Media sessions ended, by end reason", ["reason"])
REFUSED = Counter(f"{_NS}_refused_total", "Connections refused before relaying", ["reason"])
PENDING = Gauge(f"{_NS}_pending_connections",
                "Connections not yet admitted (handshake, websocket:connected, token check)")
LIMITED = Counter(
    f"{_NS}_caller_limited_total",
    "Caller input dropped or cut by a limit: audio_dropped (frames above real time + burst), "
    "flood_cutoff (calls cut above the hard limit), dtmf_invalid, dtmf_rate",
    ["what"])
RELAY_LATENCY = Histogram(
    f"{_NS}_relay_latency_seconds",
    "Added latency: caller frame received -> sent to the model (to_model); model audio "
    "received or frame due -> frame sent to the caller (to_caller)",
    ["direction"], buckets=_LATENCY_BUCKETS)
FIRST_AUDIO = Histogram(
    f"{_NS}_first_audio_seconds", "websocket:connected -> first agent audio frame sent",
    buckets=(0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0))
BARGE_INS = Counter(f"{_NS}_barge_ins_total", "Caller spoke over the agent")
TRUNCATES = Counter(f"{_NS}_truncates_total", "conversation.item.truncate sent")
MODEL_ERRORS = Counter(f"{_NS}_model_errors_total", "Realtime error events", ["code"])
RECONNECTS = Counter(f"{_NS}_model_reconnects_total", "Model reconnects", ["outcome"])
TOOL_CALLS = Counter(f"{_NS}_tool_calls_total", "Tools run", ["name"])
LATE_FRAMES = Counter(f"{_NS}_late_frames_total",
                      "Frames sent after the caller's receiver ran dry (heard as a gap)")
DROPPED_FRAMES = Counter(f"{_NS}_dropped_frames_total",
                         "Frames not sent because the Infobip socket stopped reading")
LOOP_LAG = Histogram(
    f"{_NS}_loop_lag_seconds",
    "How late the pacer's 5 ms tick woke (a busy or descheduled event loop delays audio)",
    buckets=_LATENCY_BUCKETS)
GC_PAUSE = Histogram(
    f"{_NS}_gc_pause_seconds",
    "Garbage-collector pauses, by generation (a pause stops every call's audio at once)",
    ["generation"], buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16))
REDIS_ERRORS = Counter(f"{_NS}_redis_errors_total", "Failed best-effort Redis flushes")
FENCED = Counter(f"{_NS}_fenced_sessions_total",
                 "Sessions closed because their call was re-bridged to another gateway")
STALLS = Counter(f"{_NS}_stalls_total", "Times this process found it had been stopped or "
                 "starved long enough to hold every call's audio until its fences were checked")
RESUMED = Counter(f"{_NS}_resumed_sessions_total",
                  "Sessions that took over a call re-bridged from a lost gateway")



class RefusalReason(StrEnum):
    """Why a connection was refused before it was admitted (the `reason` label of
    `callbridge_gateway_refused_total`); the close reason sent to the peer says more."""

    BAD_TOKEN = "bad_token"  # missing, malformed, unknown, used, or another call's token
    EXPIRED = "expired"  # the token's record says it expired
    TOO_LARGE = "too_large"  # a frame, request or pre-admission buffer above its limit
    TIMEOUT = "timeout"  # no websocket:connected before the admission deadline
    BAD_RATE = "bad_rate"  # a sample rate the gateway cannot serve
    CAPACITY = "capacity"  # session cap reached, or evicted from a full pending set
    DRAINING = "draining"  # the process is shutting down
    UNAVAILABLE = "unavailable"  # the token store (Redis) did not answer
    PROTOCOL = "protocol"  # anything else the media protocol does not allow
    OTHER = "other"


class Limited(StrEnum):
    """The `what` label of `callbridge_gateway_caller_limited_total`."""

    AUDIO_DROPPED = "audio_dropped"
    FLOOD_CUTOFF = "flood_cutoff"
    DTMF_INVALID = "dtmf_invalid"
    DTMF_RATE = "dtmf_rate"


#: Realtime error codes the gateway expects to see (OpenAI Realtime API reference, "error"
#: server event: https://platform.openai.com/docs/api-reference/realtime-server-events/error);
#: any other code is counted as "other" so a model cannot mint label values either.
MODEL_ERROR_CODES = rt.BENIGN_ERRORS | frozenset({
    rt.SESSION_EXPIRED, "invalid_value",
    "invalid_request_error", "server_error", "rate_limit_exceeded", "missing_required_parameter",
    "unknown_parameter", "invalid_type", "item_truncate_invalid_item_id",
    "beta_api_shape_disabled", "decimal_below_min_value", "decimal_above_max_value",
})


def refused(reason: RefusalReason) -> None:
    """Count one refusal under its fixed label."""
    REFUSED.labels(reason.value if isinstance(reason, RefusalReason)
                   else RefusalReason.OTHER.value).inc()


def limited(what: Limited, amount: int = 1) -> None:
    LIMITED.labels(what.value).inc(amount)


def model_error(code: str) -> None:
    MODEL_ERRORS.labels(code if code in MODEL_ERROR_CODES else "other").inc()


class FrameTally:
    """Frames written to callers by this process, as plain numbers: the per-frame path adds
    one to an int (a Prometheus counter takes a lock), and a collector exports them at
    scrape time. `last_at`: `time.monotonic()` of the latest frame (the event loop's clock)."""

    __slots__ = ("count", "last_at")

    def __init__(self) -> None:
        self.count = 0
        self.last_at = 0.0


FRAMES = FrameTally()


class _FramesCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(f"{_NS}_frames_sent", "Frames written to callers (agent "
                                  "audio, hold sound, notices, silence)", value=FRAMES.count)
        last = (time.time() - (time.monotonic() - FRAMES.last_at)) if FRAMES.count else 0.0
        yield GaugeMetricFamily(f"{_NS}_last_frame_sent_seconds", "Unix time of the latest "
                                "frame written to a caller (0: none yet)", value=last)


REGISTRY.register(_FramesCollector())

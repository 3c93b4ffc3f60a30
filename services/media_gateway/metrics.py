"""Prometheus metrics of the media gateway, served on GET /metrics (same port as media).

Module-level objects in the default registry: one gateway per process in production; tests
that start several gateways in one process share them, so tests read deltas, not totals.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

_NS = "callbridge_gateway"
# Relay latency is sub-millisecond when healthy; the interesting tail is 1-50 ms.
_LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)

ACTIVE_SESSIONS = Gauge(f"{_NS}_active_sessions", "Media sessions in progress")
SESSIONS = Counter(f"{_NS}_sessions_total", "Media sessions ended, by end reason", ["reason"])
REFUSED = Counter(f"{_NS}_refused_total", "Connections refused before relaying", ["reason"])
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

CONTENT_TYPE = CONTENT_TYPE_LATEST


def render() -> bytes:
    """The text exposition of every metric in the default registry."""
    return generate_latest()

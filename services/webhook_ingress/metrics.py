"""Prometheus metrics of one ingress app, in its own CollectorRegistry (so several apps in
one process, as in the tests, never collide).

The hot path only bumps plain ints; a custom collector turns them into counters/gauges at
scrape time. Histograms are observed once per *flush*, not per request.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from callbridge.services.webhook_ingress.appender import AppenderStats

PREFIX = "callbridge_ingress"
_FLUSH_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class IngressMetrics:
    """Counters as plain attributes; `render()` produces the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests: dict[int, int] = {}
        self.in_flight = 0
        self.rejected_stored = 0
        self.appender_stats: AppenderStats | None = None
        self.flush_seconds = Histogram(
            f"{PREFIX}_xadd_flush_seconds",
            "Time for one XADD pipeline (or single XADD) to be acknowledged by Redis.",
            buckets=_FLUSH_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_xadd_batch_size",
            "Entries per XADD pipeline (coalesced requests).",
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )
        self.registry.register(_Plain(self))

    def count(self, status: int) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1

    def observe_flush(self, size: int, seconds: float, ok: bool) -> None:
        """The appender's FlushObserver."""
        self.flush_seconds.observe(seconds)
        self.batch_size.observe(size)


class _Plain(Collector):
    def __init__(self, metrics: IngressMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(f"{PREFIX}_requests", "Webhook requests by HTTP status.",
                                       labels=["status"])
        for status, value in sorted(m.requests.items()):
            requests.add_metric([str(status)], value)
        yield requests
        yield GaugeMetricFamily(f"{PREFIX}_in_flight", "Webhook requests being handled.",
                                value=m.in_flight)
        # Tells processes sharing one port (SO_REUSEPORT) apart when scraped through it.
        yield GaugeMetricFamily(f"{PREFIX}_process_id", "OS process id of this ingress.",
                                value=os.getpid())
        yield CounterMetricFamily(f"{PREFIX}_rejected_stored",
                                  "Rejected bodies queued to the rejected stream.",
                                  value=m.rejected_stored)
        stats = m.appender_stats
        if stats is not None:
            for name, help_text, value in (
                ("xadd_flushes", "XADD pipelines sent.", stats.flushes),
                ("xadd_entries", "Entries sent in XADD pipelines.", stats.entries),
                ("xadd_failed_flushes", "Pipelines that failed (every request in it got 503).",
                 stats.failed_flushes),
                ("xadd_timeouts", "Appends that timed out waiting for Redis.", stats.timeouts),
                ("xadd_overloaded", "Appends refused because too many were waiting.",
                 stats.overloaded),
                ("rejected_dropped", "Rejected bodies not stored because Redis fell behind.",
                 stats.best_effort_dropped),
            ):
                yield CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=value)

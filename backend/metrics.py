"""Prometheus metrics: one registry per app, so several apps in one process never share counters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Message, Scope

UNMATCHED = "<unmatched>"
SYNC_OUTCOMES = ("succeeded", "failed")
EVENT_DROP_REASONS = ("queue_full", "redis_unavailable")
# Seconds; API calls are fast, so the buckets are finer below one second.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REDIS_OUTCOMES = ("ok", "error", "failed")
# A Redis call is bounded by REDIS_TIMEOUT_SECONDS (default 0.2): fine buckets up to a little beyond it.
REDIS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0, 2.5)


class PoolCollector(Collector):
    """Connections checked out of the engine's pool, read at scrape time (no bookkeeping on the hot path)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("taskdeck_db_pool_connections_in_use", "Database connections checked out")
        checkedout = getattr(self.engine.sync_engine.pool, "checkedout", None)
        gauge.add_metric([], float(checkedout()) if callable(checkedout) else 0.0)
        yield gauge


class Metrics:
    def __init__(self, engine: AsyncEngine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "taskdeck_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "taskdeck_http_request_duration_seconds",
            "Time to answer a request, by route template (event streams excluded)",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "taskdeck_rate_limit_refusals",
            "Requests refused by a rate-limit policy",
            ["policy"],
            registry=self.registry,
        )
        self.sync_runs = Counter(
            "taskdeck_sync_runs", "Finished project sync runs by outcome", ["outcome"], registry=self.registry
        )
        for outcome in SYNC_OUTCOMES:
            self.sync_runs.labels(outcome)
        self.event_clients = Gauge(
            "taskdeck_event_stream_clients", "Connected event-stream (SSE) clients", registry=self.registry
        )
        self.events_dropped = Counter(
            "taskdeck_events_dropped",
            "Live events not published: the publish queue was full, or Redis unavailable (breaker open, timeout)",
            ["reason"],
            registry=self.registry,
        )
        for reason in EVENT_DROP_REASONS:
            self.events_dropped.labels(reason)
        self.redis_calls = Histogram(
            "taskdeck_redis_call_duration_seconds",
            "Redis calls attempted through the circuit breaker, by outcome (ok, error answer, failed: no answer in"
            " time or no connection); refused calls while the breaker is open are not attempted",
            ["outcome"],
            buckets=REDIS_BUCKETS,
            registry=self.registry,
        )
        for outcome in REDIS_OUTCOMES:
            self.redis_calls.labels(outcome)
        self.registry.register(PoolCollector(engine))

    def observe_request(self, scope: Scope, status: int, seconds: float | None) -> None:
        """Count a response by route template (never the concrete path: bounded label values), method and
        status; time it unless `seconds` is None (an event stream: its lifetime is not a latency)."""
        route = str(getattr(scope.get("route"), "path", UNMATCHED))
        method = str(scope["method"])
        self.requests.labels(route, method, str(status)).inc()
        if seconds is not None:
            self.latency.labels(route, method).observe(seconds)

    def observe_redis_call(self, outcome: str, seconds: float) -> None:
        self.redis_calls.labels(outcome).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _metrics(state: Any) -> Metrics | None:
    metrics = getattr(state, "metrics", None)
    return metrics if isinstance(metrics, Metrics) else None


def record_sync_outcome(state: Any, status: str) -> None:
    """For the sync runner: count a finished run (`succeeded` or `failed`). `state` is `app.state`."""
    metrics = _metrics(state)
    if metrics is not None:
        metrics.sync_runs.labels(status).inc()


def is_event_stream(start: Message) -> bool:
    """Whether a response start message begins an event stream (`Content-Type: text/event-stream`)."""
    for key, value in start.get("headers", ()):
        if key.lower() == b"content-type" and value.startswith(b"text/event-stream"):
            return True
    return False


def record_rate_limited(scope: Scope, policy: str) -> None:
    metrics = _metrics(getattr(scope.get("app"), "state", None))
    if metrics is not None:
        metrics.rate_limited.labels(policy).inc()

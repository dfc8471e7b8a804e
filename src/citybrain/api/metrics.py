"""Prometheus metrics at /metrics: request rate and latency per route template, bus counters."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("citybrain_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("citybrain_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
                                 registry=self.registry)
        self.bus_published = Gauge("citybrain_bus_published", "Events published on the bus", registry=self.registry)
        self.bus_errors = Gauge("citybrain_bus_handler_errors", "Bus handler failures", registry=self.registry)


class MetricsMiddleware:
    """Pure ASGI so it costs microseconds and never buffers bodies."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - start)


def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    stats = request.app.state.platform.bus.stats
    metrics.bus_published.set(stats.published)
    metrics.bus_errors.set(stats.handler_errors)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

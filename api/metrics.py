"""Prometheus metrics at GET /metrics: request latency per route, model batch sizes, queue
depths and index sizes. One registry per app (no process-global state)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from fastapi import Request, Response

if TYPE_CHECKING:
    from api.state import AppState

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, state: AppState) -> None:
        from prometheus_client import CollectorRegistry, Histogram
        from prometheus_client.core import GaugeMetricFamily

        from api.paths import PathView

        self.paths = PathView(state.settings)  # labels name model folders, never server paths
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "blipsearch_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "blipsearch_model_batch_size",
            "Inputs per model forward pass.",
            ["model", "kind"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

        paths = self.paths

        class _Live:  # read at scrape time: queue depths and index sizes
            def collect(self) -> Iterator[GaugeMetricFamily]:
                depth = GaugeMetricFamily("blipsearch_queue_depth", "Items waiting in a queue.", labels=["queue"])
                for name, value in state.queue_depths().items():
                    queue, sep, model = name.partition("/")  # a micro-batcher: "<kind>_encode/<model>"
                    depth.add_metric([f"{queue}{sep}{paths.model(model)}" if sep else name], value)
                yield depth
                size = GaugeMetricFamily(
                    "blipsearch_index_vectors", "Vectors in a loaded collection index.", labels=["collection"]
                )
                for name, engine in state.engines().items():
                    size.add_metric([name], engine.index.ntotal)
                yield size

        self.registry.register(_Live())

    def observe_batch(self, model: str, kind: str, n: int) -> None:
        self.batch_size.labels(self.paths.model(model), kind).observe(n)

    async def middleware(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.latency.labels(request.method, template, str(status)).observe(time.perf_counter() - t0)

    def render(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

"""Prometheus metrics of the serving process (`GET /metrics`, text exposition format).

Each app owns its own `CollectorRegistry` (not prometheus_client's global one), so several apps
in one test process never collide. Routers added later (plan, switchovers, resources) get their
gauges and counters through `gauge()`/`counter()`, which return the same metric when asked twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Forecasts take 10 ms to seconds; plans a few ms. Buckets cover both ends.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "<unmatched>"  # one label for every unknown path, so scanners cannot blow up cardinality


class ServeMetrics:
    def __init__(self, namespace: str = "shadowcast") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.namespace = namespace
        self._extra: dict[str, Counter | Gauge | Histogram] = {}
        self.request_seconds = Histogram(
            "http_request_duration_seconds", "HTTP request latency by route template, method and status.",
            ["route", "method", "status"], namespace=namespace, registry=self.registry, buckets=LATENCY_BUCKETS)
        self.model_info = Info("model", "The model being served.", namespace=namespace, registry=self.registry)
        self.model_loaded_at = Gauge("model_loaded_timestamp_seconds", "When the served model was loaded.",
                                     namespace=namespace, registry=self.registry)
        self.model_reloads = Counter("model_reloads_total", "Model reload attempts by outcome.", ["outcome"],
                                     namespace=namespace, registry=self.registry)
        self.forecast_age = Gauge("forecast_age_seconds", "Seconds since the latest forecast was produced "
                                  "(-1 before the first).", namespace=namespace, registry=self.registry)
        self.forecast_clusters = Counter("forecast_clusters_total", "Clusters forecast, summed over requests.",
                                         namespace=namespace, registry=self.registry)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.request_seconds.labels(route, method, str(status)).observe(seconds)

    def model_swapped(self, version: str, uri: str, loaded_at: float) -> None:
        self.model_info.info({"version": version, "uri": uri})
        self.model_loaded_at.set(loaded_at)

    def track_forecast_age(self, latest: Callable[[], float | None], clock: Callable[[], float] = time.time) -> None:
        """`latest()` returns the wall-clock time of the newest forecast, or None."""
        def age() -> float:
            produced = latest()
            return -1.0 if produced is None else max(0.0, clock() - produced)

        self.forecast_age.set_function(age)

    # --- hooks for routers added later ----------------------------------------------------------

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return self._metric(Gauge, name, documentation, labels)

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return self._metric(Counter, name, documentation, labels)

    def histogram(self, name: str, documentation: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        return self._metric(Histogram, name, documentation, labels, buckets=tuple(buckets))

    def _metric(self, kind, name: str, documentation: str, labels: Sequence[str], **options):
        existing = self._extra.get(name)
        if existing is not None:
            if not isinstance(existing, kind) or tuple(existing._labelnames) != tuple(labels):
                raise ValueError(f"metric {name!r} is already registered as a {type(existing).__name__} "
                                 f"with labels {list(existing._labelnames)}")
            return existing
        metric = kind(name, documentation, list(labels), namespace=self.namespace, registry=self.registry, **options)
        self._extra[name] = metric
        return metric


class RequestTimer:
    """Pure ASGI middleware timing every HTTP request by its route *template* (`/v1/switchovers/{id}`).

    Pure ASGI rather than Starlette's BaseHTTPMiddleware: no extra task per request, and streamed
    responses (server-sent events) pass through untouched."""

    def __init__(self, app, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before sending a response

        async def send_and_record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            self.metrics.observe_request(template, scope["method"], status, time.perf_counter() - started)

"""The serving API: `create_app(settings)` builds the FastAPI app; `shadowcast serve` runs it.

Routers live in `pipelines/api/`, one module per area, each a `router` plus an optional
`install(app, services)` hook that registers its metrics and shared objects (`Services.extras`).
Health and metrics, forecast, model admin and plan are always there; switchovers, resources and
notifications act on a `Runtime` (controller, store, notifier, driver) built from the
`runtime:` settings or passed in, and answer 404 without one. More routers plug in via `routers=`.

The serving path imports torch, numpy, pandas, FastAPI and (for registry URIs) MLflow; never
Lightning, GluonTS or Optuna (`tests/serve/test_imports.py` holds it to that).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from pipelines.api import admin, errors, forecast, notifications, ops, plan, switchovers
from pipelines.api.auth import describe_open_reads
from pipelines.api.deps import Services
from pipelines.api.forecast_cache import ForecastCache
from pipelines.api.metrics import RequestTimer, ServeMetrics
from pipelines.api.model_holder import LoadedModel, ModelHolder, ModelLoader, RegistryLoader
from pipelines.api.runtime import Runtime, build_runtime
from pipelines.api.settings import ServeSettings
from pipelines.security import KeyVerifier

log = logging.getLogger("shadowcast.serve")
RETRY_FIRST_LOAD_S = (1.0, 30.0)  # back-off while no model could be loaded yet: first wait, longest wait


class RouterPlugin(Protocol):
    """A module of `pipelines/api/` that adds routes: `router`, and optionally `install(app, services)`."""

    router: APIRouter


CORE_ROUTERS = (ops, forecast, admin, plan, switchovers, notifications)


def create_app(settings: ServeSettings, *, predictor_loader: ModelLoader | None = None,
               runtime: Runtime | None = None, store: Any = None, routers: Sequence[RouterPlugin] = (),
               metrics: ServeMetrics | None = None, clock: Callable[[], float] = time.time,
               follow_model: bool = True) -> FastAPI:
    """The app. `predictor_loader` resolves and loads models (default: folders and the MLflow
    registry); `runtime` drives switchovers (default: built from `settings.runtime`, if any);
    `store` is what /readyz pings (default: the runtime); `follow_model=False` skips the
    background model load, for tests that only look at the schema."""
    if settings.torch_threads is not None:  # process-wide, as the server owns its process
        import torch

        torch.set_num_threads(settings.torch_threads)
    owned = runtime is None  # built here, so closed here at shutdown
    if owned:
        runtime = build_runtime(settings.runtime)
    metrics = metrics or ServeMetrics()
    forecasts = ForecastCache(clock)
    metrics.track_forecast_age(lambda: forecasts.latest_at, clock)

    def swapped(model: LoadedModel) -> None:
        metrics.model_swapped(model.version, model.resolved.uri, model.loaded_at)
        # The model and what loading it imported (MLflow, torch modules: ~200k objects) live until the
        # next swap: freeze them too, or every full collection walks them (a 100 ms pause every few
        # plans). Unfreezing first lets this one collection free the model it replaced.
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    models = ModelHolder(settings.model, predictor_loader or RegistryLoader(settings.tracking_uri), on_swap=swapped)
    services = Services(settings, models, metrics, forecasts, KeyVerifier(settings.security.api_key_hashes),
                        store if store is not None else runtime, clock, extras={"runtime": runtime})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_follow(services)) if follow_model else None
        # Everything imported and built so far (torch, MLflow, the app: ~300k objects) lives for the
        # whole process; moved out of the collector's reach, a full collection takes a few ms instead
        # of 150-500 ms, which was the plan route's p99 (benchmarks/serve_latency.py).
        gc.freeze()
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            if owned and runtime is not None:
                runtime.close()

    app = FastAPI(
        title="shadowcast", version=_version(), lifespan=lifespan,
        description="Demand forecasts as distributions, warm shadow resources sized from them, early switchovers.",
        max_body_size=settings.security.max_body_bytes,
    )
    app.state.services = services
    errors.install(app)
    for module in (*CORE_ROUTERS, *routers):
        app.include_router(module.router)
        install = getattr(module, "install", None)
        if install is not None:
            install(app, services)
    if not settings.security.protect_reads:
        describe_open_reads(app)
    if settings.security.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.security.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    app.add_middleware(RequestTimer, metrics=metrics)  # outermost: times everything, 413s and CORS included
    return app


async def _follow(services: Services) -> None:
    """Load the model, then keep following its location (a moved alias, a rewritten folder).

    Until the first load succeeds, retry with back-off: /readyz says why meanwhile."""
    interval = services.settings.reload_interval_s
    wait = RETRY_FIRST_LOAD_S[0]
    while True:
        try:
            result = await asyncio.to_thread(services.models.reload)
            if result.changed:
                services.metrics.model_reloads.labels("changed").inc()
        except Exception as exc:  # the reason is kept for /readyz and the log; serving goes on
            services.metrics.model_reloads.labels("failed").inc()
            log.warning("model %s could not be loaded: %s", services.models.location, exc)
        if services.models.ready:
            if interval <= 0:
                return
            await asyncio.sleep(interval)
        else:
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_FIRST_LOAD_S[1])


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shadowcast")
    except PackageNotFoundError:
        return "0+unknown"

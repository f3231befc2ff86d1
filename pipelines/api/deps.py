"""What the routes depend on, injected with `Depends` so a test swaps any part without patching:
either pass it to `create_app(...)` or set `app.dependency_overrides[get_store] = ...`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request

from pipelines.api.forecast_cache import ForecastCache
from pipelines.api.metrics import ServeMetrics
from pipelines.api.model_holder import LoadedModel, ModelHolder
from pipelines.api.settings import ServeSettings
from pipelines.security import KeyVerifier


@dataclass
class Services:
    settings: ServeSettings
    models: ModelHolder
    metrics: ServeMetrics
    forecasts: ForecastCache
    keys: KeyVerifier
    store: Any = None  # the allocator's state store (anything with `ping()`), when the app has one
    clock: Callable[[], float] = time.time
    extras: dict[str, Any] = field(default_factory=dict)  # what plugged-in routers share (controller, …)


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_settings(services: Services = Depends(get_services)) -> ServeSettings:
    return services.settings


def get_models(services: Services = Depends(get_services)) -> ModelHolder:
    return services.models


def get_model(models: ModelHolder = Depends(get_models)) -> LoadedModel:
    """The model for this whole request (raises ModelNotReady → 503 before one is loaded)."""
    return models.current


def get_metrics(services: Services = Depends(get_services)) -> ServeMetrics:
    return services.metrics


def get_forecasts(services: Services = Depends(get_services)) -> ForecastCache:
    return services.forecasts


def get_store(services: Services = Depends(get_services)) -> Any:
    return services.store

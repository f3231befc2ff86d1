"""`POST /v1/forecast`: quantiles (and, on request, sample paths) for the clusters in the body."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from pipelines.api import forecast_service as service
from pipelines.api.auth import AUTH_RESPONSES, READ
from pipelines.api.deps import Services, get_model, get_services
from pipelines.api.errors import NOT_READY_RESPONSES, VALIDATION_RESPONSES
from pipelines.api.model_holder import LoadedModel
from pipelines.api.schemas import ForecastRequest, ForecastResponse

router = APIRouter(prefix="/v1", tags=["forecast"])


@router.post("/forecast", response_model=ForecastResponse, **READ,
             summary="Forecast demand distributions for the clusters in the request.",
             responses={**VALIDATION_RESPONSES, **NOT_READY_RESPONSES, **AUTH_RESPONSES,
                        413: {"description": "The body is over `security.max_body_bytes`."}})
def forecast(request: ForecastRequest, model: LoadedModel = Depends(get_model),
             services: Services = Depends(get_services)) -> Response:
    # A plain `def`: FastAPI runs it in its thread pool, so sampling never blocks the event loop.
    # Reading-only, though it remembers the forecast for the plan route: it changes no state a
    # client could observe except the cache, so it follows the read-only access rule.
    limits = services.settings.forecast
    service.check_limits(request, limits)
    meta = model.predictor.metadata
    panel = service.request_panel(request, meta.known.names, meta.past.names, meta.network.freq, limits)
    result = service.forecast(model, panel, request)
    services.forecasts.put(result, model.version)
    services.metrics.forecast_clusters.inc(len(result.cluster_ids))
    body = service.response_body(result, model.version, request.quantiles or limits.default_quantiles,
                                 request.include_samples)
    return Response(body, media_type="application/json")

"""The served model: what it is (`GET /v1/model`) and swapping it (`POST /v1/admin/reload-model`)."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Depends, HTTPException, status

from pipelines.api.auth import AUTH_RESPONSES, READ, WRITE
from pipelines.api.deps import Services, get_model, get_services
from pipelines.api.errors import NOT_READY_RESPONSES, VALIDATION_RESPONSES
from pipelines.api.model_holder import LoadedModel
from pipelines.api.schemas import ModelStatus, ReloadRequest, ReloadResponse

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/model", response_model=ModelStatus, **READ,
            summary="The model being served.", responses={**NOT_READY_RESPONSES, **AUTH_RESPONSES})
def model_status(model: LoadedModel = Depends(get_model)) -> ModelStatus:
    meta = model.predictor.metadata
    return ModelStatus(version=model.version, location=model.location, uri=model.resolved.uri,
                       freq=meta.network.freq, known_covariates=list(meta.known.names),
                       past_covariates=list(meta.past.names),
                       loaded_at=datetime.fromtimestamp(model.loaded_at, timezone.utc))


@router.post("/admin/reload-model", response_model=ReloadResponse, **WRITE,
             summary="Load the model again (or another one) and swap it in without dropping requests.",
             responses={**VALIDATION_RESPONSES, **AUTH_RESPONSES,
                        503: {"description": "The configured model could not be loaded; the old one still serves."}})
def reload_model(body: ReloadRequest | None = None, services: Services = Depends(get_services)) -> ReloadResponse:
    # A plain `def` so the load runs in a worker thread while other requests keep being served.
    body = body or ReloadRequest()
    try:
        result = services.models.reload(body.location, force=body.force)
    except Exception as exc:
        services.metrics.model_reloads.labels("failed").inc()
        served = services.models.current.version if services.models.ready else "none"
        detail = f"could not load {body.location or services.models.location}: {exc} (still serving version {served})"
        if body.location:  # the caller's location is the problem
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                [{"loc": ["body", "location"], "msg": detail, "type": "model_load"}]) from None
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail) from None
    services.metrics.model_reloads.labels("changed" if result.changed else "unchanged").inc()
    return ReloadResponse(changed=result.changed, previous_version=result.previous_version, version=result.version,
                          location=services.models.location)

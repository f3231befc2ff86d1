"""Liveness, readiness and metrics: what an orchestrator and Prometheus poll."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipelines.api.auth import AUTH_RESPONSES, READ
from pipelines.api.deps import Services, get_services
from pipelines.api.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["operations"])
STORE_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=HealthResponse, summary="Liveness: the process answers.")
async def healthz() -> HealthResponse:
    return HealthResponse()


@router.get("/readyz", response_model=ReadyResponse, summary="Readiness: a model is loaded and the store answers.",
            responses={503: {"model": ReadyResponse, "description": "Not ready; `checks` says what is missing."}})
async def readyz(services: Services = Depends(get_services)) -> JSONResponse:
    checks = {"model": _model_check(services), "store": await _store_check(services)}
    ready = all(v.startswith("ok") or v == "not configured" for v in checks.values())
    return JSONResponse(ReadyResponse(ready=ready, checks=checks).model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics (text exposition format).", **READ,
            response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **AUTH_RESPONSES})
async def metrics(services: Services = Depends(get_services)) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _model_check(services: Services) -> str:
    models = services.models
    if models.ready:
        return f"ok: version {models.current.version}"
    return f"error: {models.last_error}" if models.last_error else "loading"


async def _store_check(services: Services) -> str:
    if services.store is None:
        return "not configured"
    try:
        await asyncio.wait_for(asyncio.to_thread(services.store.ping), STORE_TIMEOUT_S)
    except TimeoutError:
        return f"error: no answer within {STORE_TIMEOUT_S:g} s"
    except Exception as exc:  # any failure means "not ready"; the reason is reported, not raised
        return f"error: {type(exc).__name__}: {exc}"
    return "ok"

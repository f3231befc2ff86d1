"""`POST /v1/plan` (sizes pools from the cached forecasts) and `GET /v1/plan/current`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response, status

from pipelines.api import planning
from pipelines.api.auth import AUTH_RESPONSES, READ, WRITE
from pipelines.api.deps import Services, get_services
from pipelines.api.errors import VALIDATION_RESPONSES
from pipelines.api.forecast_service import RequestError
from pipelines.api.schemas import PlanRequest, PlanResponse

router = APIRouter(prefix="/v1", tags=["plan"])
CURRENT = "plan"  # key of the latest plan in Services.extras
MEMO = "sorted_paths"  # key of the planning.SortedPathsMemo in Services.extras


def install(app, services: Services) -> None:
    services.extras["plan_units"] = services.metrics.gauge(
        "plan_units", "Units the current plan wants at its first step.", ["kind"])
    services.extras[MEMO] = planning.SortedPathsMemo()


@router.post("/plan", response_model=PlanResponse, **WRITE,
             summary="Size active and shadow pools, and decide switchovers, from the cached forecasts.",
             responses={**VALIDATION_RESPONSES, **AUTH_RESPONSES,
                        409: {"description": "No cached forecast for a cluster (POST /v1/forecast first)."}})
def make_plan(request: PlanRequest, services: Services = Depends(get_services)) -> Response:
    # A write: the plan becomes the current one, which the runtime acts on.
    try:
        forecast = services.forecasts.get(request.cluster_ids)
    except KeyError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, exc.args[0]) from None
    except ValueError as exc:
        raise RequestError(str(exc), ["body", "cluster_ids"]) from None
    runtime = services.extras.get("runtime")
    current = planning.make_plan(forecast, request, services.settings.plan,
                                 runtime.controller.fleet() if runtime is not None else None, services.extras[MEMO])
    services.extras[CURRENT] = current
    gauge = services.extras["plan_units"]
    gauge.labels("active").set(sum(p.active_units[0] for p in current.plan.clusters.values()))
    gauge.labels("shadow").set(current.plan.shared_shadow_units[0] if current.plan.shared_shadow_units
                               else sum(p.shadow_units[0] for p in current.plan.clusters.values()))
    return Response(current.body, media_type="application/json")


@router.get("/plan/current", response_model=PlanResponse, **READ, summary="The latest plan.",
            responses={**AUTH_RESPONSES, 404: {"description": "No plan has been made yet."}})
def current_plan(services: Services = Depends(get_services)) -> Response:
    current = services.extras.get(CURRENT)
    if current is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no plan yet; POST /v1/plan first")
    return Response(current.body, media_type="application/json")

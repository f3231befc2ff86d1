"""`GET /v1/run`: what the control loop of `shadowcast run` is doing — source and model health, the
plan it acts on, its recent reconcile steps and the switchovers in the store, with their journals.

Plugged into the serving app with `create_app(routers=[run_api])`; the loop is shared through
`Services.extras["loop"]`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel

from pipelines.api.auth import AUTH_RESPONSES, READ
from pipelines.api.deps import Services, get_services

router = APIRouter(prefix="/v1", tags=["control loop"])
LOOP = "loop"  # key of the ControlLoop in Services.extras


class StepOut(BaseModel):
    at: float
    action: str
    cluster_id: str
    subject: str
    detail: str
    outcome: str


class JournalOut(BaseModel):
    phase: str
    at: float
    detail: str


class LoopSwitchoverOut(BaseModel):
    id: str
    kind: str
    cluster_id: str
    route: str
    source_id: str
    target_id: str
    phase: str
    error: str
    journal: list[JournalOut]


class RunStatus(BaseModel):
    iteration: int
    source_healthy: bool | None
    source_error: str
    model_healthy: bool | None
    model_error: str
    forecaster: str
    forecast_error: str
    plan_id: str | None
    plan_made_at: float | None
    plan_step: int | None
    last_iteration_at: float | None
    steps: list[StepOut]
    switchovers: list[LoopSwitchoverOut]


@router.get("/run", response_model=RunStatus, **READ, summary="The control loop's state, recent steps and switchovers.",
            responses={**AUTH_RESPONSES, 404: {"description": "This process runs no control loop."}})
def run_status(switchovers: int = Query(20, ge=0, le=1000, description="How many recent switchovers to list."),
               services: Services = Depends(get_services)) -> RunStatus:
    loop = services.extras.get(LOOP)
    if loop is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this process runs no control loop (shadowcast run)")
    return RunStatus(**loop.snapshot(), switchovers=_switchovers(loop.runtime.store, switchovers))


def _switchovers(store: Any, count: int) -> list[LoopSwitchoverOut]:
    recent = store.switchovers()[-count:] if count else []
    return [LoopSwitchoverOut(id=s.id, kind=str(s.kind), cluster_id=s.cluster_id, route=s.route, source_id=s.source_id,
                              target_id=s.target_id, phase=str(s.phase), error=s.error,
                              journal=[JournalOut(phase=str(e.phase), at=e.at, detail=e.detail)
                                       for e in store.journal(s.id)])
            for s in recent]

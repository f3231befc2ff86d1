"""Switchovers on the runtime: start one, read it (with its journal), revert it; and the
resources the runtime holds. Each request is idempotent by switchover id, as in the controller."""

from __future__ import annotations

import dataclasses
import uuid

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from pipelines.api.auth import AUTH_RESPONSES, READ, WRITE
from pipelines.api.deps import Services, get_services
from pipelines.api.errors import VALIDATION_RESPONSES
from pipelines.api.runtime import Runtime
from pipelines.api.schemas import ResourceOut, ResourcesResponse, SwitchoverOut, SwitchoverRequest

router = APIRouter(prefix="/v1", tags=["runtime"])
NO_RUNTIME = {404: {"description": "Unknown switchover, or no runtime is configured (runtime.driver)."}}
CONFLICT = {409: {"description": "Not possible in the current state (wrong resource states, a resource busy "
                                 "in another switchover, or the id reused for another request)."}}
SwitchoverId = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")


def install(app, services: Services) -> None:
    services.extras["switchovers_total"] = services.metrics.counter(
        "switchovers_total", "Switchover requests by kind and outcome.", ["kind", "outcome"])


def get_runtime(services: Services = Depends(get_services)) -> Runtime:
    runtime = services.extras.get("runtime")
    if runtime is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no runtime is configured (set runtime.driver)")
    return runtime


@router.post("/switchovers", response_model=SwitchoverOut, **WRITE,
             summary="Move a route's traffic to a warm shadow (or back); answers when it has committed or rolled back.",
             responses={**VALIDATION_RESPONSES, **AUTH_RESPONSES, **NO_RUNTIME, **CONFLICT})
def start_switchover(request: SwitchoverRequest, runtime: Runtime = Depends(get_runtime),
                     services: Services = Depends(get_services)) -> SwitchoverOut:
    # A plain `def`: syncing state and notifying clients take seconds; the event loop stays free.
    return _switch(runtime, services, request.id or f"sw-{uuid.uuid4().hex[:12]}", request.route,
                   request.source_id, request.target_id, request.kind)


@router.get("/switchovers/{switchover_id}", response_model=SwitchoverOut, **READ,
            summary="A switchover's phase and journal.", responses={**AUTH_RESPONSES, **NO_RUNTIME})
def read_switchover(switchover_id: str = SwitchoverId, runtime: Runtime = Depends(get_runtime)) -> SwitchoverOut:
    return _out(runtime, _known(runtime, switchover_id))


@router.post("/switchovers/{switchover_id}/revert", response_model=SwitchoverOut, **WRITE,
             summary="The spike did not come: move the route back to the former active (kept on standby).",
             responses={**AUTH_RESPONSES, **NO_RUNTIME, **CONFLICT})
def revert_switchover(switchover_id: str = SwitchoverId, runtime: Runtime = Depends(get_runtime),
                      services: Services = Depends(get_services)) -> SwitchoverOut:
    original = _known(runtime, switchover_id)
    if original.kind != "switchover" or original.phase != "committed":
        raise HTTPException(status.HTTP_409_CONFLICT, f"only a committed switchover can be reverted; "
                                                      f"{switchover_id!r} is a {original.kind} in phase {original.phase}")
    return _switch(runtime, services, f"{switchover_id}.revert", original.route, original.target_id,
                   original.source_id, "revert")


@router.get("/resources", response_model=ResourcesResponse, **READ, summary="Units the runtime holds, by state.",
            responses={**AUTH_RESPONSES, **NO_RUNTIME})
def resources(cluster_id: str | None = Query(None, min_length=1, max_length=256),
              runtime: Runtime = Depends(get_runtime)) -> ResourcesResponse:
    units = runtime.store.resources(cluster_id)
    fleet = {c: {str(state): n for state, n in counts.items()} for c, counts in runtime.controller.fleet().items()
             if cluster_id in (None, c)}
    return ResourcesResponse(resources=[ResourceOut(**{**dataclasses.asdict(r), "state": str(r.state)}) for r in units],
                             fleet=fleet)


def _switch(runtime: Runtime, services: Services, switchover_id: str, route: str, source: str, target: str,
            kind: str) -> SwitchoverOut:
    from allocator.controller import SwitchoverFailed, SwitchoverRejected
    from allocator.store import ResourceBusyError, SwitchoverConflictError
    from allocator.types import SwitchoverKind

    counter = services.extras["switchovers_total"]
    try:
        result = runtime.controller.switch(switchover_id, route, source, target, SwitchoverKind(kind))
    except SwitchoverFailed as failed:  # it ran and was rolled back: an answer, not a server error
        result = failed.switchover
    except (SwitchoverRejected, ResourceBusyError, SwitchoverConflictError) as exc:
        counter.labels(kind, "rejected").inc()
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    counter.labels(kind, str(result.phase)).inc()
    return _out(runtime, result)


def _known(runtime: Runtime, switchover_id: str):
    try:
        return runtime.store.get_switchover(switchover_id)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no switchover {switchover_id!r}") from None


def _out(runtime: Runtime, switchover) -> SwitchoverOut:
    journal = [{"phase": str(e.phase), "at": e.at, "detail": e.detail} for e in runtime.store.journal(switchover.id)]
    return SwitchoverOut(id=switchover.id, kind=str(switchover.kind), cluster_id=switchover.cluster_id,
                         route=switchover.route, source_id=switchover.source_id, target_id=switchover.target_id,
                         phase=str(switchover.phase), error=switchover.error, journal=journal)

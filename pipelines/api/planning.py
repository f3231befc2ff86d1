"""What `POST /v1/plan` does, as plain functions: cached forecasts + fleet + prices → a `Plan`.

The policy itself is `allocator.policy.plan` (pure); this module only converts the API's pydantic
sections into the allocator's value types (their own checks, such as "warm activation cannot be
slower than a cold provision", become 422s naming the section) and the plan into JSON.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json

from forecasting.forecast import Forecast
from pipelines.api.forecast_service import RequestError
from pipelines.api.schemas import PlanRequest
from pipelines.api.settings import PlanSettings

if TYPE_CHECKING:  # the allocator is imported when the first plan is made, not at start-up
    from allocator.policy import PathSummary
    from allocator.types import CostModel, PoolSpec


@dataclass(frozen=True)
class CurrentPlan:
    plan_id: str
    created_at: float
    plan: Any  # allocator.types.Plan
    spec: Any  # allocator.types.PoolSpec
    body: bytes  # the JSON answered when it was made, answered again by GET /v1/plan/current


def allocator_inputs(request: PlanRequest, defaults: PlanSettings) -> tuple[Any, Any, Any]:
    from allocator.types import CostModel, PolicyConfig, PoolSpec, ResourceType, SwitchoverMode

    costs, pool, policy = request.costs or defaults.costs, request.pool or defaults.pool, request.policy or defaults.policy
    try:
        spec_values = {**pool.model_dump(), "resource_type": ResourceType(pool.resource_type), "regions": tuple(pool.regions)}
        spec = PoolSpec(**spec_values)
    except ValueError as exc:
        raise RequestError(str(exc), ["body", "pool"]) from None
    try:
        config = PolicyConfig(**{**policy.model_dump(), "mode": SwitchoverMode(policy.mode)})
    except ValueError as exc:
        raise RequestError(str(exc), ["body", "policy"]) from None
    return CostModel(**costs.model_dump()), spec, config


def fleet_state(request: PlanRequest, observed: dict[str, dict[Any, int]] | None) -> Any:
    """The request's fleet if it gives one, else what the runtime sees, else an empty fleet."""
    from allocator.types import ClusterFleet, FleetState, ResourceState

    if request.fleet is not None:
        return FleetState({c: ClusterFleet(**f.model_dump()) for c, f in request.fleet.items()})
    if observed is None:
        return FleetState()
    return FleetState({c: ClusterFleet(active=n.get(ResourceState.ACTIVE, 0), warm=n.get(ResourceState.WARM, 0),
                                       standby=n.get(ResourceState.STANDBY, 0),
                                       provisioning=n.get(ResourceState.COLD, 0))
                       for c, n in observed.items()})


class SortedPathsMemo:
    """The sorted paths of the last forecast planned (`allocator.policy.PathSummary`).

    The forecast cache answers the same `Forecast` object until new forecasts arrive, and plans are
    made far more often than forecasts (every fleet change, every poll of the control loop), so the
    sorting, most of a plan's work, is done once per forecast and pool timing. Holds one summary:
    about twice the forecast's paths in memory.
    """

    def __init__(self) -> None:
        self._last: PathSummary | None = None
        self._lock = threading.Lock()

    def summary(self, forecast: Forecast, spec: PoolSpec, costs: CostModel) -> PathSummary:
        from allocator.policy import summarise_paths

        with self._lock:
            last = self._last
        if last is not None and last.fits(forecast, spec, costs):
            return last
        made = summarise_paths(forecast, spec, costs)
        with self._lock:
            self._last = made
        return made


def make_plan(forecast: Forecast, request: PlanRequest, defaults: PlanSettings,
              observed: dict[str, dict[Any, int]] | None, memo: SortedPathsMemo | None = None) -> CurrentPlan:
    from allocator.policy import plan

    costs, spec, config = allocator_inputs(request, defaults)
    summary = memo.summary(forecast, spec, costs) if memo is not None else None
    result = plan(forecast, fleet_state(request, observed), costs, spec, config, min_active=defaults.min_active,
                  summary=summary)
    plan_id, created_at = uuid.uuid4().hex[:16], time.time()
    return CurrentPlan(plan_id, created_at, result, spec, plan_body(plan_id, created_at, forecast, result))


def plan_body(plan_id: str, created_at: float, forecast: Forecast, result: Any) -> bytes:
    """`PlanResponse` as JSON, its fields in the model's order. Plain dicts and the plan's own tuples go
    straight to pydantic-core's serialiser: building and checking a model per cluster and per
    switchover cost more than writing the whole body (1,000 clusters × 48 steps)."""
    starts = forecast.starts.to_pydatetime()  # one conversion, not a pandas lookup per cluster
    clusters = []
    for cluster_id, start in zip(forecast.cluster_ids, starts, strict=True):
        p = result.clusters[cluster_id]
        clusters.append({
            "cluster_id": cluster_id, "start": start, "active_units": p.active_units, "shadow_units": p.shadow_units,
            "quantile_level": p.quantile_level, "pool_level": p.pool_level, "exceed_probability": p.exceed_probability,
            "switchovers": [{"step": d.step, "mode": str(d.mode), "units": d.units, "probability": d.probability}
                            for d in p.switchovers]})
    body = {"plan_id": plan_id, "created_at": created_at, "freq": forecast.freq, "horizon": forecast.horizon,
            "clusters": clusters, "shared_shadow_units": result.shared_shadow_units, "placement": result.placement}
    return to_json(body, inf_nan_mode="null")  # what the model's serialiser writes for non-finite floats

"""`shadowcast run` settings: one pydantic model, loaded from YAML (`configs/run*.yaml`).

The field defaults *are* the one-command demo (`shadowcast run` with no `--config`): the demo's
synthetic data replayed one step per interval, the demo's registered model (or a seasonal
bootstrap until one loads), the simulated driver, and the API on 127.0.0.1:8000. Unknown keys and
bad values are errors naming the file and the key path (`pipelines.settings.load_config`).

Only pydantic, the serving settings and the allocator's value types load with this module, so a
bad config (or a second loop refused by the lock) is reported before torch is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipelines.api.settings import (
    ForecastLimits,
    PlanSettings,
    PolicySettings,
    PoolSettings,
    RuntimeSettings,
    SecuritySettings,
)
from pipelines.settings import DataConfig, Strict, SyntheticData

# The synthetic generator names its clusters cluster-000, cluster-001, ...: one route each.
DEMO_ROUTES = [f"cluster-{i:03d}" for i in range(SyntheticData().num_clusters)]


class ModelSettings(Strict):
    # A model folder or an MLflow URI (`models:/name@alias`, `models:/name/3`, `runs:/<id>/model`),
    # loaded exactly as `shadowcast serve` loads it.
    location: str = "models:/shadowcast-dpe@champion"
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db
    # How often the location is resolved again (a moved alias, a rewritten folder); 0: at start only.
    reload_interval_s: float = Field(60.0, ge=0)
    # Forecaster used while no model has loaded yet (never once one has: a failed reload keeps the
    # previous model). `none`: no plans until a model loads.
    fallback: Literal["seasonal-bootstrap", "none"] = "seasonal-bootstrap"


class ForecastSettings(Strict):
    horizon: int = Field(24, ge=1)
    num_samples: int = Field(200, ge=1)
    seed: int = 0


class RunPolicySettings(PolicySettings):
    mode: Literal["scale-out", "tiered"] = "tiered"

    @field_validator("mode")
    @classmethod
    def _acted_on(cls, mode: str) -> str:
        if mode != "tiered":
            # Controller.reconcile acts on tiered switchovers and reverts only: joining units to a
            # route that holds per-session state needs session-partitioned routing.
            raise ValueError("the control loop acts on tiered switchovers only (the controller does not perform "
                             "scale-out decisions); use mode: tiered")
        return mode


class RunPlanSettings(PlanSettings):
    # The demo's unit: about one synthetic cluster's daily peak, so scheduled events outgrow it.
    pool: PoolSettings = PoolSettings(capacity_per_unit=400)
    policy: RunPolicySettings = RunPolicySettings()

    @model_validator(mode="after")
    def _allocator_accepts(self) -> RunPlanSettings:
        from allocator.types import CostModel, PoolSpec, ResourceType

        # The allocator's own checks (e.g. a warm activation slower than a cold provision), at start-up.
        PoolSpec(**{**self.pool.model_dump(), "resource_type": ResourceType(self.pool.resource_type),
                    "regions": tuple(self.pool.regions)})
        CostModel(**self.costs.model_dump())
        return self


class RunRuntimeSettings(RuntimeSettings):
    driver: Literal["simulated", "local"] = "simulated"
    routes: list[str] = Field(default_factory=lambda: list(DEMO_ROUTES), min_length=1)
    runtime_dir: Path | None = Path("runs/run")  # the state store's default home; the local driver's processes
    slots_per_route: int = Field(8, ge=2)  # HAProxy server slots per route (local driver)
    # false: stop every worker (and HAProxy) on exit; true: leave them serving for the next run to adopt.
    keep_workers_on_exit: bool = False

    @model_validator(mode="after")
    def _local_needs(self) -> RunRuntimeSettings:
        import re

        if self.driver == "local":
            if self.runtime_dir is None:
                raise ValueError("runtime_dir is needed by the local driver")
            bad = [r for r in self.routes if not re.fullmatch(r"[A-Za-z0-9_-]{1,48}", r)]
            if bad:
                raise ValueError(f"route {bad[0]!r}: the local driver takes names of 1-48 letters, digits, '_' or '-'")
        return self


class ApiSettings(Strict):
    """The API served by the loop's process (forecast, plan, switchovers, /metrics, /v1/run)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: str = "warning"
    security: SecuritySettings = SecuritySettings()
    limits: ForecastLimits = ForecastLimits()


class ReplaySettings(Strict):
    """For demos and drills on a static source: replay its last `steps` steps as if they were arriving
    live, one per interval, then start over. The `forecast.horizon` steps after them stay hidden, so
    known-future covariates (events, temperature) still cover every forecast."""

    steps: int = Field(48, ge=1)


class HealthSettings(Strict):
    """The Resource Health Monitor (`allocator.health`) beside the loop: it probes every unit and
    replaces a dead shadow or fails a dead active over to a shadow, between passes as well."""

    interval_s: float = Field(2.0, gt=0)
    failure_threshold: int = Field(2, ge=1)  # consecutive failed probes before a unit counts as failed


class RunConfig(Strict):
    interval_s: float = Field(2.0, gt=0)  # one iteration (pull, forecast, plan, reconcile) per interval
    max_steps_per_interval: int = Field(20, ge=1)  # reconcile steps per iteration; the rest waits for the next
    # CPU threads for sampling; 1 is fastest for a loop's small batches on a busy machine. null: torch's default.
    torch_threads: int | None = Field(1, ge=1)
    data: DataConfig = DataConfig()
    replay: ReplaySettings | None = Field(ReplaySettings(), validate_default=True)  # checked against `data`
    model: ModelSettings = ModelSettings()
    forecast: ForecastSettings = ForecastSettings()
    plan: RunPlanSettings = RunPlanSettings()
    runtime: RunRuntimeSettings = RunRuntimeSettings()
    health: HealthSettings | None = None  # null: no monitor (a dead active stays in its route)
    api: ApiSettings = ApiSettings()

    @field_validator("replay")
    @classmethod
    def _replay_needs_static(cls, replay: ReplaySettings | None, info) -> ReplaySettings | None:  # noqa: ANN001
        data = info.data.get("data")
        if replay is not None and data is not None and data.source == "prometheus":
            raise ValueError("replay reveals a static source step by step; a prometheus source is live already "
                             "(set replay: null)")
        return replay

    @model_validator(mode="after")
    def _future_covers_horizon(self) -> RunConfig:
        source = self.data.prometheus
        if self.data.source == "prometheus" and source is not None:
            if any(c.known_future for c in source.covariates) and source.future_steps < self.forecast.horizon:
                raise ValueError(f"data.prometheus.future_steps ({source.future_steps}) must cover forecast.horizon "
                                 f"({self.forecast.horizon}): known-future covariates are needed over the horizon")
        return self

    def store_url(self) -> str:
        from allocator.store import default_url

        return self.runtime.store_url or default_url(self.runtime.runtime_dir or ".")

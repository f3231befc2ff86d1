"""Typed configuration of `shadowcast simulate` (pydantic at the edge; unknown keys are errors).

Every policy names its *operating point* (the value reported in the per-policy table) and a
*sweep* of its main knob (the points of its cost-vs-unserved frontier); the operating point is
always part of the sweep.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.settings import MlflowConfig, Strict, SyntheticData


class TraceConfig(Strict):
    """The demand trace: where it comes from, which part is replayed, and the size of one unit."""

    source: Literal["synthetic", "file", "dataset"] = "synthetic"
    dataset: str | None = None
    data_dir: Path | None = None
    resample: str | None = None
    path: Path | None = None
    freq: str | None = None
    past_covariates: list[str] = []
    known_covariates: list[str] = []
    synthetic: SyntheticData = SyntheticData(days=28)
    clusters: int | None = Field(None, ge=1)  # first n clusters only
    # The replayed part: the last `holdout_steps` of every cluster, or the steps from `start` to `end`.
    holdout_steps: int | None = Field(None, ge=1)
    start: datetime | None = None
    end: datetime | None = None
    # One unit serves `capacity_per_unit` demand; by default each cluster's peak is `peak_units` units.
    peak_units: float = Field(50.0, gt=0)
    capacity_per_unit: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _window(self) -> TraceConfig:
        if self.source == "dataset" and not self.dataset:
            raise ValueError("source 'dataset' needs `dataset` (m4_hourly, worldcup98, alibaba2018, google2019, etth1)")
        if self.source == "file" and self.path is None:
            raise ValueError("source 'file' needs `path`")
        if (self.holdout_steps is None) == (self.start is None):
            raise ValueError("give either `holdout_steps` or `start` (with an optional `end`), not both or neither")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("`end` must come after `start`")
        return self


class PoolConfig(Strict):
    name: str = "default"
    resource_type: Literal["compute", "storage", "network"] = "compute"
    cold_provision_s: float = Field(300.0, ge=0)
    warm_activation_s: float = Field(5.0, ge=0)
    regions: list[str] = ["region-a"]

    @model_validator(mode="after")
    def _times(self) -> PoolConfig:
        if self.warm_activation_s > self.cold_provision_s:
            raise ValueError("warm_activation_s cannot exceed cold_provision_s")
        if not self.regions or len(set(self.regions)) != len(self.regions):
            raise ValueError("regions must be a non-empty list of distinct names")
        return self


class CostConfig(Strict):
    active_unit_cost: float = Field(1.0, gt=0)  # per unit-hour
    warm_fraction: float = Field(0.3, ge=0, le=1)
    unserved_penalty: float = Field(100.0, ge=0)  # per unit-hour of capacity short


class ForecasterConfig(Strict):
    name: str = "seasonal-bootstrap"
    options: dict[str, Any] = {}
    horizon: int = Field(30, ge=1)
    num_samples: int = Field(200, ge=1)
    cadence_steps: int = Field(5, ge=1)  # a new forecast every so many steps
    refit_every_steps: int | None = Field(None, ge=1)  # None: fit once, on the history before the replay
    context_steps: int | None = Field(None, ge=1)  # history shown to the forecaster (None: all of it)


class OutageConfig(Strict):
    at: datetime | int  # a timestamp, or a step of the replay
    region: str


class ScenarioConfig(Strict):
    failure_rate_per_hour: float = Field(0.0, ge=0)
    outage: OutageConfig | None = None
    seed: int = 0


def _positive(values: list[float], name: str) -> list[float]:
    if any(v <= 0 for v in values):
        raise ValueError(f"{name} values must be > 0")
    return values


class StaticConfig(Strict):
    enabled: bool = True
    headroom: float = Field(1.0, gt=0)
    sweep: list[float] = [1.0, 1.5, 2.0, 3.0, 4.0, 5.0]

    @field_validator("sweep")
    @classmethod
    def _positive_headroom(cls, values: list[float]) -> list[float]:
        return _positive(values, "sweep")


class ReactiveConfig(Strict):
    enabled: bool = True
    target_utilisation: float = Field(0.7, gt=0, le=1)
    sweep: list[float] = [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    sync_period_s: float = Field(15.0, gt=0)
    stabilisation_s: float = Field(300.0, ge=0)
    tolerance: float = Field(0.1, ge=0, lt=1)
    # "utilisation": the HPA's resource metric, measured on ready units and capped at 100 %;
    # "demand": an external request-rate metric (KEDA), uncapped.
    metric: Literal["utilisation", "demand"] = "utilisation"

    @field_validator("sweep")
    @classmethod
    def _in_range(cls, values: list[float]) -> list[float]:
        if any(not 0 < v <= 1 for v in values):
            raise ValueError("target utilisations must lie in (0, 1]")
        return values


class WarmPoolConfig(ReactiveConfig):
    warm_pool: int = Field(5, ge=0)
    pool_sweep: list[int] = [0, 2, 5, 10, 20]

    @field_validator("pool_sweep")
    @classmethod
    def _sizes(cls, values: list[int]) -> list[int]:
        if any(v < 0 for v in values):
            raise ValueError("warm pool sizes must be >= 0")
        return values


class PredictiveConfig(ReactiveConfig):
    warm_pool: int = Field(0, ge=0)


class CalibrationConfig(Strict):
    """Adaptive conformal correction of the levels (`allocator.calibration`)."""

    step_size: float = Field(0.5, gt=0, le=10)  # in tail-depth units, -log(1 - level)
    lower: float = Field(0.01, gt=0, lt=1)
    upper: float = Field(1 - 1e-12, gt=0, lt=1)


class ShadowcastConfig(Strict):
    """The operating point is `costs.unserved_penalty`; `penalty_sweep` spans the frontier."""

    enabled: bool = True
    penalty_sweep: list[float] = [2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
    mode: Literal["scale-out", "tiered"] = "scale-out"
    # Keep at least the demand just seen active: after the forecast missed it, always, or never.
    guard: Literal["after-miss", "always", "off"] = "after-miss"
    # Revert when P(demand > the smaller set) < revert_risk × the switch threshold (1: no hysteresis).
    revert_risk: float = Field(0.5, gt=0, le=1)
    calibration: CalibrationConfig | None = CalibrationConfig()
    region_resilient: bool = False
    also_tiered: bool = False  # replay a tiered-mode variant too, for comparison

    @field_validator("penalty_sweep")
    @classmethod
    def _positive_penalties(cls, values: list[float]) -> list[float]:
        return _positive(values, "penalty_sweep")


class PoliciesConfig(Strict):
    static: StaticConfig = StaticConfig()
    reactive: ReactiveConfig = ReactiveConfig()
    reactive_warmpool: WarmPoolConfig = WarmPoolConfig()
    predictive_point: PredictiveConfig = PredictiveConfig()
    shadowcast: ShadowcastConfig = ShadowcastConfig()


class ReportConfig(Strict):
    zoom_steps: int = Field(720, ge=10)  # width of the zoomed demand-vs-capacity panel, around the peak
    cluster: str | None = None  # cluster to plot (default: the first)


class SimulateConfig(Strict):
    trace: TraceConfig = TraceConfig(holdout_steps=168)
    pool: PoolConfig = PoolConfig()
    costs: CostConfig = CostConfig()
    forecaster: ForecasterConfig = ForecasterConfig()
    scenario: ScenarioConfig = ScenarioConfig()
    policies: PoliciesConfig = PoliciesConfig()
    report: ReportConfig = ReportConfig()
    output_dir: Path = Path("runs/simulate")
    mlflow: MlflowConfig = MlflowConfig(experiment="shadowcast-simulate", register_as=None)
    log_mlflow: bool = True

    @model_validator(mode="after")
    def _outage_region_exists(self) -> SimulateConfig:
        outage = self.scenario.outage
        if outage is not None and outage.region not in self.pool.regions:
            raise ValueError(f"scenario.outage.region {outage.region!r} is not one of pool.regions {self.pool.regions}")
        return self

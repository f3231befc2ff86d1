"""Request and response bodies of the forecast and model routes (pydantic at the edge).

Demand comes in the data contract's long format (`forecasting/data.py`), either as rows
(`[{cluster_id, timestamp, demand, <covariate>: value, ...}, ...]`) or as columns
(`{cluster_id: [...], timestamp: [...], demand: [...], <covariate>: [...]}`), whichever the
client has at hand. Rows after a cluster's last demand, with `demand` null, carry the
known-future covariates of the horizon, exactly as in a CSV file.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from pipelines.api.settings import CostSettings, PolicySettings, PoolSettings

MAX_HORIZON, MAX_SAMPLES = 10_000, 100_000  # schema-level caps; the settings' limits are usually lower


def _naive_utc(value: datetime) -> datetime:
    """Timestamps with an offset become UTC; without one they are taken as UTC already."""
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


Timestamp = Annotated[datetime, AfterValidator(_naive_utc)]
ClusterId = Annotated[str, Field(min_length=1, max_length=256)]
Level = Annotated[float, Field(gt=0, lt=1)]

_ROWS_EXAMPLE = [
    {"cluster_id": "web-1", "timestamp": "2025-03-01T10:00:00Z", "demand": 118.0, "temperature": 7.5},
    {"cluster_id": "web-1", "timestamp": "2025-03-01T11:00:00Z", "demand": 131.0, "temperature": 8.1},
    {"cluster_id": "web-1", "timestamp": "2025-03-01T12:00:00Z", "demand": None, "temperature": 9.0},
]


class DemandRow(BaseModel):
    """One cluster at one step; any further key is a covariate column (a number or null)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, json_schema_extra={"examples": _ROWS_EXAMPLE[:1]})
    __pydantic_extra__: dict[str, float | None] = Field(init=False)

    cluster_id: ClusterId
    timestamp: Timestamp
    demand: float | None = Field(None, description="Null in the future rows that carry known-future covariates.")


class DemandColumns(BaseModel):
    """The same table by column; every column has one entry per row. Further keys are covariates."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, json_schema_extra={"examples": [{
        "cluster_id": ["web-1", "web-1", "web-1"],
        "timestamp": ["2025-03-01T10:00:00Z", "2025-03-01T11:00:00Z", "2025-03-01T12:00:00Z"],
        "demand": [118.0, 131.0, None],
        "temperature": [7.5, 8.1, 9.0],
    }]})
    __pydantic_extra__: dict[str, list[float | None]] = Field(init=False)

    cluster_id: list[ClusterId]
    timestamp: list[Timestamp]
    demand: list[float | None]

    @model_validator(mode="after")
    def _same_length(self) -> DemandColumns:
        expected = len(self.cluster_id)
        for name, values in self.as_dict().items():
            if len(values) != expected:
                raise ValueError(f"column {name!r} has {len(values)} entries, cluster_id has {expected}")
        return self

    def as_dict(self) -> dict[str, list[Any]]:
        return {"cluster_id": self.cluster_id, "timestamp": self.timestamp, "demand": self.demand,
                **(self.model_extra or {})}


class ForecastRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"horizon": 2, "num_samples": 100, "quantiles": [0.1, 0.5, 0.9], "rows": _ROWS_EXAMPLE},
    ]})

    horizon: int = Field(48, ge=1, le=MAX_HORIZON, description="Steps to forecast after each cluster's last demand.")
    num_samples: int = Field(100, ge=1, le=MAX_SAMPLES, description="Sample paths per cluster.")
    quantiles: list[Level] | None = Field(None, min_length=1, max_length=99,
                                          description="Levels in (0, 1); default: the server's list.")
    include_samples: bool = Field(False, description="Also return the raw sample paths (large).")
    seed: int = Field(0, ge=0, le=2 ** 63 - 1, description="Same seed and data, same forecast.")
    rows: list[DemandRow] | None = Field(None, description="Long format, one object per cluster and step.")
    columns: DemandColumns | None = Field(None, description="The same table by column.")

    @model_validator(mode="after")
    def _one_table(self) -> ForecastRequest:
        if (self.rows is None) == (self.columns is None):
            raise ValueError("give the demand table either as `rows` or as `columns`, exactly one of them")
        return self


class ClusterForecast(BaseModel):
    cluster_id: str
    start: datetime = Field(description="First forecast step.")
    mean: list[float]
    quantiles: dict[str, list[float]] = Field(description="`q<level>` → one value per step.")
    samples: list[list[float]] | None = Field(None, description="[sample][step], when asked for.")


class ForecastResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model_version": "3", "freq": "h", "horizon": 2, "num_samples": 100, "quantile_levels": [0.5, 0.9],
        "forecasts": [{"cluster_id": "web-1", "start": "2025-03-01T12:00:00", "mean": [140.2, 151.7],
                       "quantiles": {"q0.5": [139.0, 150.5], "q0.9": [171.3, 186.0]}}],
    }]})

    model_version: str
    freq: str
    horizon: int
    num_samples: int
    quantile_levels: list[float]
    forecasts: list[ClusterForecast]


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {}, {"location": "models:/shadowcast-dpe/4"}, {"force": True}]})

    location: str | None = Field(None, min_length=1, max_length=2048,
                                 description="Serve this model from now on; default: the configured one.")
    force: bool = Field(False, description="Load again even if the version is the one being served.")


class ReloadResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"changed": True, "previous_version": "3", "version": "4", "location": "models:/shadowcast-dpe@champion"}]})

    changed: bool
    previous_version: str | None
    version: str
    location: str


class ModelStatus(BaseModel):
    version: str
    location: str
    uri: str
    freq: str
    known_covariates: list[str]
    past_covariates: list[str]
    loaded_at: datetime


class ReadyResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"ready": True, "checks": {"model": "ok: version 3", "store": "ok"}}]})

    ready: bool
    checks: dict[str, str]


class HealthResponse(BaseModel):
    status: str = "ok"


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str
    cluster: str | None = None


class ErrorResponse(BaseModel):
    """422 bodies keep FastAPI's shape (`detail`: a list naming where); other errors a message."""

    detail: list[ErrorItem] | str


# --- plans ----------------------------------------------------------------------------------------

class FleetEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: int = Field(0, ge=0)
    warm: int = Field(0, ge=0)
    standby: int = Field(0, ge=0)
    provisioning: int = Field(0, ge=0)


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"cluster_ids": ["web-1"], "fleet": {"web-1": {"active": 3, "warm": 1}},
         "pool": {"capacity_per_unit": 50, "cold_provision_s": 600, "warm_activation_s": 5}},
    ]})

    cluster_ids: list[ClusterId] | None = Field(None, min_length=1, max_length=100_000,
                                                description="Default: every cluster with a cached forecast.")
    fleet: dict[ClusterId, FleetEntry] | None = Field(
        None, description="Units per cluster now; default: what the runtime reports, else none.")
    costs: CostSettings | None = Field(None, description="Default: the server's `plan.costs`.")
    pool: PoolSettings | None = Field(None, description="Default: the server's `plan.pool`.")
    policy: PolicySettings | None = Field(None, description="Default: the server's `plan.policy`.")


class SwitchoverDecisionOut(BaseModel):
    step: int
    mode: str
    units: int
    probability: float


class ClusterPlanOut(BaseModel):
    cluster_id: str
    start: datetime
    active_units: list[int]
    shadow_units: list[int]
    quantile_level: float
    pool_level: float
    exceed_probability: list[float]
    switchovers: list[SwitchoverDecisionOut]


class PlanResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "plan_id": "3f2a9c0d1e4b5a6c", "created_at": 1767261600.0, "freq": "h", "horizon": 2,
        "clusters": [{"cluster_id": "web-1", "start": "2025-03-01T12:00:00", "active_units": [3, 4],
                      "shadow_units": [2, 2], "quantile_level": 0.95, "pool_level": 0.985,
                      "exceed_probability": [0.02, 0.31],
                      "switchovers": [{"step": 1, "mode": "scale-out", "units": 1, "probability": 0.31}]}],
        "shared_shadow_units": [], "placement": {"local": 2}}]})

    plan_id: str
    created_at: float = Field(description="Unix seconds.")
    freq: str
    horizon: int
    clusters: list[ClusterPlanOut]
    shared_shadow_units: list[int]
    placement: dict[str, int]


# --- runtime: switchovers, resources, notifications --------------------------------------------------

SwitchoverKindName = Literal["switchover", "revert", "failover"]


class SwitchoverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"id": "spike-2025-03-01T12-web-1", "route": "web-1", "source_id": "res-0001", "target_id": "res-0002"}]})

    id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$",
                           description="Idempotency key: the same id again answers the same switchover.")
    route: str = Field(min_length=1, max_length=256)
    source_id: str = Field(min_length=1, max_length=256, description="The unit serving the route now.")
    target_id: str = Field(min_length=1, max_length=256, description="The warm shadow (or standby) to move to.")
    kind: SwitchoverKindName = "switchover"


class SwitchoverOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "spike-2025-03-01T12-web-1", "kind": "switchover", "cluster_id": "web-1", "route": "web-1",
        "source_id": "res-0001", "target_id": "res-0002", "phase": "committed", "error": "",
        "journal": [{"phase": "planned", "at": 1767261600.0, "detail": "switchover res-0001 -> res-0002"}]}]})

    id: str
    kind: str
    cluster_id: str
    route: str
    source_id: str
    target_id: str
    phase: str = Field(description="planned, syncing, notifying, redirecting, committed, rolling-back, rolled-back")
    error: str
    journal: list[dict[str, Any]] = []


class ResourceOut(BaseModel):
    id: str
    cluster_id: str
    pool: str
    region: str
    state: str
    endpoint: str


class ResourcesResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "resources": [{"id": "res-0001", "cluster_id": "web-1", "pool": "default", "region": "local",
                       "state": "active", "endpoint": ""}],
        "fleet": {"web-1": {"active": 1, "warm": 2}}}]})

    resources: list[ResourceOut]
    fleet: dict[str, dict[str, int]]


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://hooks.example.org/shadowcast", "cluster_id": "web-1"}]})

    url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s/]+(/\S*)?$")
    cluster_id: str | None = Field(None, min_length=1, max_length=256, description="Default: every cluster.")


class WebhookOut(BaseModel):
    id: str
    url: str
    cluster_id: str | None

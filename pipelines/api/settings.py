"""The serving API's settings: one pydantic model, loaded from YAML (`configs/serve.yaml`).

Everything the app needs to know from outside lives here, so a test builds the app from a
`ServeSettings(...)` literal and a deployment from a file, with the same validation and the same
error messages (`load_config(path, ServeSettings)` names the file and key path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.security import KeyHash


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecuritySettings(_Strict):
    # Hashes only (`shadowcast hash-key`); with none, every mutating route answers 403.
    api_key_hashes: list[str] = []
    protect_reads: bool = False  # true: read-only routes need a key too (health probes stay open)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    cors_origins: list[str] = []  # empty: no CORS headers at all

    @field_validator("api_key_hashes")
    @classmethod
    def _parseable(cls, hashes: list[str]) -> list[str]:
        for text in hashes:
            KeyHash.parse(text)  # raises naming the bad entry (redacted)
        return hashes


class ForecastLimits(_Strict):
    """Caps on one forecast request, so one caller cannot take the server's memory or CPU."""

    max_horizon: int = Field(336, ge=1)
    max_samples: int = Field(1000, ge=1)
    max_clusters: int = Field(5000, ge=1)
    max_rows: int = Field(2_000_000, ge=1)
    max_sample_values: int = Field(20_000_000, ge=1)  # clusters × samples × horizon
    max_gap: int = Field(3, ge=0)
    default_quantiles: list[float] = [0.05, 0.1, 0.5, 0.9, 0.95]


Level = Field(None, gt=0, lt=1)


class CostSettings(_Strict):
    """`allocator.types.CostModel`: prices per unit-hour."""

    active_unit_cost: float = Field(1.0, gt=0)
    warm_fraction: float = Field(0.3, ge=0, le=1)
    unserved_penalty: float = Field(20.0, ge=0)


class PoolSettings(_Strict):
    """`allocator.types.PoolSpec`: what one unit is and how fast it comes up."""

    name: str = "default"
    resource_type: Literal["compute", "storage", "network"] = "compute"
    capacity_per_unit: float = Field(1.0, gt=0)
    cold_provision_s: float = Field(300.0, ge=0)
    warm_activation_s: float = Field(5.0, ge=0)
    regions: list[str] = Field(["local"], min_length=1)


class PolicySettings(_Strict):
    """`allocator.types.PolicyConfig`: levels left null come from the prices."""

    active_level: float | None = Level
    pool_level: float | None = Level
    switch_threshold: float | None = Level
    revert_threshold: float | None = Level
    mode: Literal["scale-out", "tiered"] = "scale-out"
    shared_pool: bool = False
    region_resilient: bool = False


class PlanSettings(_Strict):
    """Defaults of `POST /v1/plan`; a request may override any section."""

    costs: CostSettings = CostSettings()
    pool: PoolSettings = PoolSettings()
    policy: PolicySettings = PolicySettings()
    min_active: int = Field(1, ge=0)


class RuntimeSettings(_Strict):
    """The switchover runtime behind `/v1/switchovers`, `/v1/resources`, `/v1/notifications`.
    Without a driver those routes answer 404 ("no runtime configured"); plans still work."""

    driver: Literal["simulated", "local"] | None = None
    store_url: str | None = None  # SQLAlchemy URL; default: sqlite file in runtime_dir (or the working directory)
    runtime_dir: Path | None = None  # the local driver's processes and HAProxy live here
    routes: list[str] = ["default"]  # one per cluster: a cluster maps to the route of the same name
    notify_timeout_s: float = Field(1.0, gt=0)  # how long a switchover waits for webhooks and SSE clients


class ServeSettings(_Strict):
    # A model folder or an MLflow URI; with an alias, `reload_interval_s` follows where it points.
    model: str = "models:/shadowcast-dpe@champion"
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db
    reload_interval_s: float = Field(60.0, ge=0)  # 0: only POST /v1/admin/reload-model reloads
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"
    # CPU threads torch may use for sampling; null: torch's default (all cores). On a busy or small
    # machine 1 is often much faster: OpenMP threads that wait for a core spin instead of working.
    torch_threads: int | None = Field(None, ge=1)
    security: SecuritySettings = SecuritySettings()
    forecast: ForecastLimits = ForecastLimits()
    plan: PlanSettings = PlanSettings()
    runtime: RuntimeSettings = RuntimeSettings()

"""The serving API's settings: one pydantic model, loaded from YAML (`configs/serve.yaml`).

Everything the app needs to know from outside lives here, so a test builds the app from a
`ServeSettings(...)` literal and a deployment from a file, with the same validation and the same
error messages (`load_config(path, ServeSettings)` names the file and key path).
"""

from __future__ import annotations

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


class ServeSettings(_Strict):
    # A model folder or an MLflow URI; with an alias, `reload_interval_s` follows where it points.
    model: str = "models:/shadowcast-dpe@champion"
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db
    reload_interval_s: float = Field(60.0, ge=0)  # 0: only POST /v1/admin/reload-model reloads
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"
    security: SecuritySettings = SecuritySettings()
    forecast: ForecastLimits = ForecastLimits()

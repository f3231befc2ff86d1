"""Shared fixtures. Every test runs offline: MLflow tracks to a temporary SQLite store, data is
generated or read from the shared public-data folder (tests needing it skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session", autouse=True)
def _session_mlflow_store(tmp_path_factory: pytest.TempPathFactory):
    """One throw-away tracking store for the whole session (creating one costs seconds)."""
    store = tmp_path_factory.mktemp("mlflow")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    yield store
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """Two cores here: more threads than cores only adds contention."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    from forecasting.datasets import resolve_data_dir

    path = resolve_data_dir()
    if not path.exists():
        pytest.skip(f"public datasets not found at {path} (set SHADOWCAST_DATA_DIR to run these tests)")
    return path

"""Fixtures of the serving tests: small real models (untrained networks: seconds, not minutes),
a real MLflow registry (the session's temporary store), and a real uvicorn server on loopback."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from forecasting.data import Panel
from forecasting.model import DeepARNetwork, NetworkConfig
from forecasting.predictor import DeepARPredictor, ModelMetadata
from forecasting.seasonality import time_feature_names
from forecasting.synthetic import SyntheticSpec, generate_panel
from forecasting.windows import CovariateScaler
from pipelines.api.settings import ServeSettings
from pipelines.security import hash_key

API_KEY = "test-key-0123456789abcdef"
HORIZON = 6


def untrained_predictor(panel: Panel, seed: int = 0, hidden_size: int = 8, context_length: int = 24,
                        lags: tuple[int, ...] = (1, 2, 3, 24)) -> DeepARPredictor:
    """A predictor with random weights: its forecasts are nonsense but its shapes, covariates,
    sampling and (de)serialisation are the real ones, and a different seed is a different model."""
    torch.manual_seed(seed)
    config = NetworkConfig(freq=panel.freq, lags=lags, context_length=context_length, prediction_length=HORIZON,
                           num_clusters=len(panel.cluster_ids), time_features=time_feature_names(panel.freq),
                           num_known=len(panel.known_covariates), num_past=len(panel.past_covariates),
                           hidden_size=hidden_size, num_layers=1)
    metadata = ModelMetadata(config, {c: i for i, c in enumerate(panel.cluster_ids)},
                             CovariateScaler.fit(panel, panel.known_covariates),
                             CovariateScaler.fit(panel, panel.past_covariates))
    return DeepARPredictor(DeepARNetwork(config), metadata)


@pytest.fixture(scope="session")
def panel() -> Panel:
    return generate_panel(SyntheticSpec(num_clusters=3, days=6, seed=3))


@pytest.fixture(scope="session")
def model_dir(panel, tmp_path_factory) -> Path:
    return untrained_predictor(panel, seed=1).save(tmp_path_factory.mktemp("serve-model") / "model")


def register(predictor: DeepARPredictor, name: str, folder: Path) -> str:
    """Log `predictor` as a new version of registered model `name` (as the training job does)."""
    import mlflow

    from pipelines.tracking import use_experiment
    from pipelines.train import log_model

    use_experiment("serve-tests")
    with mlflow.start_run(run_name=f"register-{name}"):
        _, version = log_model(predictor.save(folder), name)
    return version


def set_alias(name: str, alias: str, version: str) -> None:
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)


def request_body(panel: Panel, horizon: int = HORIZON, history: int = 48, **options) -> dict:
    """A columnar forecast request: each cluster's last `history` observations, then `horizon`
    future rows carrying the known-future covariates (taken from the panel's held-out end)."""
    cut = panel.cut(horizon).truncate_future(horizon)
    frame = cut.frame.groupby("cluster_id", sort=False).tail(history + horizon)
    columns = {"cluster_id": frame["cluster_id"].tolist(),
               "timestamp": [t.isoformat() for t in frame["timestamp"]],
               "demand": [None if np.isnan(v) else float(v) for v in frame["demand"]]}
    for name in panel.covariates:
        columns[name] = [None if np.isnan(v) else float(v) for v in frame[name]]
    return {"horizon": horizon, "num_samples": 20, "columns": columns, **options}


def rows_of(columns: dict) -> list[dict]:
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]


@pytest.fixture
def settings(model_dir) -> ServeSettings:
    return ServeSettings(model=str(model_dir), reload_interval_s=0,
                         security={"api_key_hashes": [hash_key(API_KEY)]})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(app, timeout_s: float = 20.0) -> Iterator[str]:
    """Serve `app` with a real uvicorn server on a free loopback port (in a thread); yield its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_ready(client, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get("/readyz")
        if response.status_code == 200:
            return response.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout_s} s: {response.text}")
        time.sleep(0.05)


def forecast_frame(body: dict) -> pd.DataFrame:
    return pd.DataFrame([{"cluster_id": f["cluster_id"], **{k: v[0] for k, v in f["quantiles"].items()}}
                         for f in body["forecasts"]])

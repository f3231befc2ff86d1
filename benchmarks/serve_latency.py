"""Serving benchmark: a real `shadowcast serve` process, a load generator on loopback.

    .venv/bin/python benchmarks/serve_latency.py [--requests 40] [--seconds 15] [--concurrency 4]

Measures, and prints as one JSON line last:
- `cold_start_s`: from starting the process to the first 200 of /readyz, with the model loaded
  from the MLflow registry by alias (the production set-up; a temporary SQLite store here);
- `forecast_p50_ms` / `forecast_p99_ms`: POST /v1/forecast for 100 clusters × 100 samples × 48
  steps (quantiles only), one request at a time; `forecast_samples_p50_ms` the same with the sample
  paths in the response;
- `rps`: forecast requests completed per second with `--concurrency` clients for `--seconds`;
- `plan_p50_ms` / `plan_p99_ms`: POST /v1/plan for 1,000 clusters × 48 steps from cached forecasts
  (the server keeps their paths sorted after the first plan); `plan_new_forecast_ms` that first plan,
  made right after the forecasts arrived, sorting included.
Floors: plan_p99_ms ≤ 50, cold_start_s ≤ 5 (`floors_met` says whether this run met them).

The model is the demo's architecture (2 × 40 LSTM, context 96, hourly lags up to 169) with random
weights: latency does not depend on what the weights learnt. Load on the machine skews every
figure, so the 1-minute load average is reported beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KEY = "benchmark-key-0123456789abcdef0123456789"
HORIZON, SAMPLES, CLUSTERS, PLAN_CLUSTERS, HISTORY = 48, 100, 100, 1000, 280


def build_model(panel, folder: Path) -> Path:
    """The demo's network shape with random weights, saved as a model folder."""
    import torch

    from forecasting.model import DeepARNetwork, NetworkConfig
    from forecasting.predictor import DeepARPredictor, ModelMetadata
    from forecasting.seasonality import lags_for, time_feature_names
    from forecasting.windows import CovariateScaler

    torch.manual_seed(0)
    config = NetworkConfig(freq=panel.freq, lags=tuple(lags_for(panel.freq)), context_length=96,
                           prediction_length=HORIZON, num_clusters=len(panel.cluster_ids),
                           time_features=time_feature_names(panel.freq), num_known=len(panel.known_covariates),
                           num_past=len(panel.past_covariates), hidden_size=40, num_layers=2)
    metadata = ModelMetadata(config, {c: i for i, c in enumerate(panel.cluster_ids)},
                             CovariateScaler.fit(panel, panel.known_covariates),
                             CovariateScaler.fit(panel, panel.past_covariates))
    return DeepARPredictor(DeepARNetwork(config), metadata).save(folder)


def register(model_dir: Path, tracking_uri: str) -> None:
    import mlflow

    from pipelines.tracking import use_experiment
    from pipelines.train import log_model

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    use_experiment("benchmark", tracking_uri)
    with mlflow.start_run(run_name="benchmark-model"):
        _, version = log_model(model_dir, "bench-dpe")
    mlflow.MlflowClient().set_registered_model_alias("bench-dpe", "champion", version)


def columns(panel, clusters: list[str]) -> dict:
    """Columnar request table: each cluster's last HISTORY observations and HORIZON future rows."""
    cut = panel.select(clusters).cut(HORIZON).truncate_future(HORIZON)
    frame = cut.frame.groupby("cluster_id", sort=False).tail(HISTORY + HORIZON)
    table = {"cluster_id": frame["cluster_id"].tolist(), "timestamp": [t.isoformat() for t in frame["timestamp"]]}
    for name in ("demand", *panel.covariates):
        values = frame[name].to_numpy(dtype=float)
        table[name] = [None if np.isnan(v) else float(v) for v in values]
    return table


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        response = call()
        out.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
    return out


def throughput(url: str, body: dict, clients: int, seconds: float) -> float:
    done, stop = [], threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while not stop.is_set():
                if http.post("/v1/forecast", json=body).status_code == 200:
                    done.append(time.perf_counter())

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return len([t for t in done if t - started <= seconds]) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="Sequential requests per latency figure.")
    parser.add_argument("--seconds", type=float, default=15.0, help="Length of the throughput run.")
    parser.add_argument("--concurrency", type=int, default=4, help="Clients in the throughput run.")
    parser.add_argument("--threads", type=int, default=1, help="The server's torch_threads (0: torch's default).")
    args = parser.parse_args()

    from forecasting.synthetic import SyntheticSpec, generate_panel
    from pipelines.security import hash_key

    work = Path(tempfile.mkdtemp(prefix="shadowcast-bench-"))
    panel = generate_panel(SyntheticSpec(num_clusters=PLAN_CLUSTERS, days=21, seed=0))
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    register(build_model(panel, work / "model"), tracking)
    port = free_port()
    config = work / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "model": "models:/bench-dpe@champion", "tracking_uri": tracking, "port": port, "reload_interval_s": 0,
        "log_level": "warning", "security": {"api_key_hashes": [hash_key(KEY)]},
        "torch_threads": args.threads or None,
        "plan": {"pool": {"capacity_per_unit": 50, "cold_provision_s": 7200, "warm_activation_s": 5}}}))
    forecast_body = {"horizon": HORIZON, "num_samples": SAMPLES, "columns": columns(panel, panel.cluster_ids[:CLUSTERS])}
    batches = [columns(panel, panel.cluster_ids[i:i + CLUSTERS]) for i in range(0, PLAN_CLUSTERS, CLUSTERS)]

    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    started = time.perf_counter()
    server = subprocess.Popen([str(Path(sys.executable).parent / "shadowcast"), "serve", "--config", str(config)],
                              env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        cold_start = wait_ready(url, server, started)
        with httpx.Client(base_url=url, timeout=120) as http:
            post = lambda body: http.post("/v1/forecast", json=body)  # noqa: E731
            timed(lambda: post(forecast_body), 3)  # warm-up: first calls allocate
            forecast_ms = timed(lambda: post(forecast_body), args.requests)
            with_samples = timed(lambda: post({**forecast_body, "include_samples": True}), max(5, args.requests // 4))
            rps = throughput(url, forecast_body, args.concurrency, args.seconds)
            for batch in batches:  # 1,000 clusters in the cache, one forecast request per 100
                timed(lambda: post({"horizon": HORIZON, "num_samples": SAMPLES, "columns": batch}), 1)
            plan = lambda: http.post("/v1/plan", json={}, headers={"X-API-Key": KEY})  # noqa: E731
            plan_new_ms = timed(plan, 1)  # the first plan of new forecasts also sorts their paths
            timed(plan, 2)
            plan_ms = timed(plan, args.requests)
            planned = len(plan().json()["clusters"])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    result = {
        "forecast_p50_ms": round(float(np.percentile(forecast_ms, 50)), 1),
        "forecast_p99_ms": round(float(np.percentile(forecast_ms, 99)), 1),
        "forecast_samples_p50_ms": round(float(np.percentile(with_samples, 50)), 1),
        "cold_start_s": round(cold_start, 2),
        "rps": round(rps, 2),
        "plan_p50_ms": round(float(np.percentile(plan_ms, 50)), 1),
        "plan_p99_ms": round(float(np.percentile(plan_ms, 99)), 1),
        "plan_new_forecast_ms": round(plan_new_ms[0], 1),
        "plan_clusters": planned,
        "forecast_shape": f"{CLUSTERS} clusters x {SAMPLES} samples x {HORIZON} steps",
        "concurrency": args.concurrency,
        "torch_threads": args.threads or "default",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    result["floors_met"] = result["plan_p99_ms"] <= 50 and result["cold_start_s"] <= 5
    print(json.dumps(result))


def wait_ready(url: str, server: subprocess.Popen, started: float, timeout_s: float = 120) -> float:
    while time.perf_counter() - started < timeout_s:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"not ready in {timeout_s} s")


if __name__ == "__main__":
    main()

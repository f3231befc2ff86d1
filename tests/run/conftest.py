"""Fixtures for `shadowcast run`: a small DeepAR trained here on ramps (seconds, one thread), a
demand exporter whose per-cluster ramp a test starts, a real `prometheus` scraping it every
second, and the loop as a real `shadowcast run` process. Every process is stopped at teardown,
whatever the test did."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from allocator.drivers.haproxy import free_port

PROMETHEUS = shutil.which("prometheus")
METRIC = "shadowcast_e2e_demand"
CAPACITY = 12.0  # demand one unit carries


# --- a model that has seen ramps ------------------------------------------------------------------


def ramp_frame(clusters: int = 6, steps: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Per-second demand: a flat level with noise, and now and then a ramp up, a plateau, a ramp down."""
    rng = np.random.default_rng(seed)
    frames = []
    for c in range(clusters):
        base = rng.uniform(2, 8)
        demand = np.full(steps, base)
        t = int(rng.integers(20, 100))
        while t < steps:
            up, hold = int(rng.integers(10, 60)), int(rng.integers(5, 30))
            top = base * rng.uniform(2, 8)
            shape = np.concatenate([np.linspace(base, top, up), np.full(hold, top), np.linspace(top, base, up)])
            demand[t:t + len(shape)] = shape[:steps - t]
            t += len(shape) + int(rng.integers(40, 150))
        demand *= 1 + rng.normal(0, 0.04, steps)
        frames.append(pd.DataFrame({"cluster_id": f"train-{c}", "demand": np.clip(demand, 0, None),
                                    "timestamp": pd.date_range("2025-01-01", periods=steps, freq="s")}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="session")
def ramp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder: DeepAR on lags of the last five seconds, trained for a few seconds on one thread."""
    import torch

    from forecasting.data import validate_panel
    from forecasting.estimator import DeepARConfig, DeepARForecaster

    threads = torch.get_num_threads()
    panel = validate_panel(ramp_frame(), source="ramps", freq="s")
    config = DeepARConfig(prediction_length=10, context_length=12, lags=(1, 2, 3, 4, 5), hidden_size=16,
                          num_layers=1, dropout=0.0, batch_size=64, batches_per_epoch=40, max_epochs=8, patience=0,
                          lr=5e-3, num_threads=1, validate=False, accelerator="cpu", devices=1)
    try:
        forecaster = DeepARForecaster(config).fit(panel)
    finally:
        torch.set_num_threads(threads)
    return forecaster.predictor.save(tmp_path_factory.mktemp("ramp-model") / "model")


def register_model(folder: Path, name: str) -> str:
    """A new registered version of `name` holding the model folder, as the training job logs it."""
    import mlflow

    from pipelines.tracking import use_experiment
    from pipelines.train import log_model

    use_experiment("run-tests")
    with mlflow.start_run(run_name=f"register-{name}"):
        _, version = log_model(folder, name)
    assert version is not None
    return version


def register_broken_model(name: str, tmp_path: Path) -> str:
    """A registered version whose artifacts hold no shadowcast model (what a botched upload leaves)."""
    import mlflow

    from pipelines import mlflow_model
    from pipelines.tracking import use_experiment

    junk = tmp_path / "not-a-model"
    junk.mkdir(exist_ok=True)
    (junk / "README").write_text("the weights never made it here\n")
    use_experiment("run-tests")
    with mlflow.start_run(run_name=f"register-broken-{name}"):
        info = mlflow.pyfunc.log_model(name="model", python_model=mlflow_model.__file__,
                                       artifacts={"predictor": str(junk)}, pip_requirements=["shadowcast"],
                                       registered_model_name=name)
    return str(info.registered_model_version)


def set_alias(name: str, alias: str, version: str) -> None:
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)


# --- demand exporter and prometheus ----------------------------------------------------------------


@dataclass(frozen=True)
class Ramp:
    start: float  # wall clock
    seconds: float
    base: float
    peak: float

    @property
    def peak_at(self) -> float:
        return self.start + self.seconds

    def level(self, now: float) -> float:
        done = min(1.0, max(0.0, (now - self.start) / self.seconds))
        return self.base + (self.peak - self.base) * done


class DemandExporter:
    """Serves `shadowcast_e2e_demand{cluster=...}`: each cluster flat at its base level (3 % noise,
    the same value within a second) until a test starts a ramp, then linear up to the peak, held."""

    def __init__(self, bases: dict[str, float], noise: float = 0.03) -> None:
        self.bases, self.noise = dict(bases), noise
        self.ramps: dict[str, Ramp] = {}
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                body = exporter.text(time.time()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def level(self, cluster: str, now: float) -> float:
        ramp = self.ramps.get(cluster)
        return self.bases[cluster] if ramp is None else ramp.level(now)

    def value(self, cluster: str, now: float) -> float:
        jitter = random.Random(f"{cluster}:{int(now)}").gauss(0, self.noise)
        return max(0.0, self.level(cluster, now) * (1 + jitter))

    def text(self, now: float) -> str:
        lines = [f"# TYPE {METRIC} gauge"]
        lines += [f'{METRIC}{{cluster="{c}"}} {self.value(c, now):.4f}' for c in self.bases]
        return "\n".join(lines) + "\n"

    def start_ramp(self, cluster: str, seconds: float, peak: float, start_level: float | None = None) -> Ramp:
        """From `start_level` (default: the cluster's base) to `peak` (which may lie below it), then held."""
        ramp = Ramp(time.time(), seconds, self.bases[cluster] if start_level is None else start_level, peak)
        self.ramps[cluster] = ramp
        return ramp

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Prometheus:
    """A real prometheus on a fixed port and data dir, so a test can stop it and start it again."""

    def __init__(self, folder: Path, targets: list[str]) -> None:
        if PROMETHEUS is None:
            pytest.skip("the prometheus binary is not installed (apt-get install prometheus; .ci/run does)")
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (folder / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "demand", "static_configs": [{"targets": targets}]}]}))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.folder / 'prometheus.yml'}", f"--storage.tsdb.path={self.folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / "prometheus.log", "a"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "prometheus.log").read_text()
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("prometheus was not ready within 30 s")

    def wait_for_samples(self, count: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        query = f"min(count_over_time({METRIC}[5m]))"
        while time.monotonic() < deadline:
            try:
                result = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=2).json()
                if result["data"]["result"] and float(result["data"]["result"][0]["value"][1]) >= count:
                    return
            except (httpx.TransportError, KeyError, ValueError):
                pass
            time.sleep(0.25)
        raise AssertionError(f"prometheus did not hold {count} samples per cluster within {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@pytest.fixture(scope="module")
def demand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemandExporter, Prometheus]]:
    """Two clusters' demand, scraped every second: `web` (simulated-driver loops) and `api` (local)."""
    exporter = DemandExporter({"web": 4.0, "api": 4.0})
    try:
        prometheus = Prometheus(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{exporter.port}"])
        try:
            prometheus.start()
            yield exporter, prometheus
        finally:
            prometheus.stop()
    finally:
        exporter.close()


# --- the loop as a process --------------------------------------------------------------------------


def loop_config(prometheus_url: str, cluster: str, model: str, workdir: Path, *, driver: str = "simulated",
                **overrides) -> dict:
    """A run config for one cluster's demand in Prometheus: one-second steps, a ten-step horizon,
    units of 12 demand (the base level of 4 needs one; a ramp's peak of 36 needs three). The warm
    activation time counts the loop's own delay in seeing demand (a 1 s scrape, a 1 s interval)
    on top of the switchover itself, so the policy starts a move that much earlier."""
    config = {
        "interval_s": 1,
        "torch_threads": 1,
        "data": {"source": "prometheus", "max_gap": 30, "prometheus": {
            "url": prometheus_url, "demand_query": f'{METRIC}{{cluster="{cluster}"}}', "step": "1s",
            "lookback": "60s", "timeout_s": 2}},
        "replay": None,
        "model": {"location": model, "reload_interval_s": 1, "fallback": "none"},
        "forecast": {"horizon": 10, "num_samples": 200, "seed": 0},
        "plan": {"pool": {"name": "e2e", "capacity_per_unit": CAPACITY, "cold_provision_s": 8, "warm_activation_s": 3}},
        "runtime": {"driver": driver, "runtime_dir": str(workdir / "runtime"), "routes": [cluster]},
        "api": {"port": free_port(), "log_level": "warning"},
    }
    for key, value in overrides.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and isinstance(config.get(key), dict) else value
    return config


class LoopProcess:
    """`shadowcast run --config <file>` as a child process, with helpers to read its API."""

    def __init__(self, config: dict, workdir: Path, name: str = "loop") -> None:
        self.config, self.workdir = config, workdir
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{config['api']['port']}"
        self.log_path = workdir / f"{name}.log"
        self.process = subprocess.Popen(command("--config", str(self.config_path)), cwd=workdir,
                                        stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
                                        env=loop_env(), start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=5)

    def status(self) -> dict:
        response = self.get("/v1/run")
        assert response.status_code == 200, response.text
        return response.json()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Samples by (name, sorted label items)."""
        text = self.get("/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def wait_for(self, predicate, what: str, timeout_s: float = 60, interval_s: float = 0.2):  # noqa: ANN001
        """Until `predicate(status)` is truthy; returns its value. Fails early if the process died."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"shadowcast run exited with {self.process.returncode} while waiting for "
                                     f"{what}:\n{self.log()[-4000:]}")
            try:
                last = self.status()
            except httpx.TransportError:
                time.sleep(interval_s)
                continue
            value = predicate(last)
            if value:
                return value
            time.sleep(interval_s)
        raise AssertionError(f"no {what} within {timeout_s} s; last status: {last}\nlog:\n{self.log()[-4000:]}")

    def terminate(self, timeout_s: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"shadowcast run did not stop within {timeout_s} s of SIGTERM:\n{self.log()}")
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "run", *args]


def loop_env() -> dict[str, str]:
    # The session's MLflow store (tests/conftest.py) is inherited through MLFLOW_TRACKING_URI.
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def committed_switchovers(status: dict, cluster: str) -> list[dict]:
    return [s for s in status["switchovers"]
            if s["cluster_id"] == cluster and s["kind"] == "switchover" and s["phase"] == "committed"]


def journal_time(switchover: dict, phase: str) -> float:
    return next(e["at"] for e in switchover["journal"] if e["phase"] == phase)

"""The `shadowcast` command as a user runs it: real subprocesses, real files."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.estimator import DeepARForecaster
from forecasting.synthetic import SyntheticSpec, generate_frame, generate_panel

BIN = Path(sys.executable).parent / "shadowcast"


def run(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ})


def test_help_lists_the_sub_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("train", "forecast", "demo"):
        assert command in result.stdout


def test_cli_start_up_imports_no_heavy_library():
    code = ("import sys, pipelines.cli; "
            "print(sorted(m for m in ('torch', 'lightning', 'mlflow', 'gluonts', 'pandas', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    spec = SyntheticSpec(num_clusters=3, days=14, seed=2)
    panel = generate_panel(spec).cut(12)
    DeepARForecaster(prediction_length=12, context_length=24, hidden_size=8, num_layers=1, batches_per_epoch=5,
                     max_epochs=1, patience=0).fit(panel).predictor.save(folder / "model")
    generate_frame(spec).to_csv(folder / "data.csv", index=False)  # last 12 steps: future covariates only
    frame = pd.read_csv(folder / "data.csv")
    frame.loc[frame.groupby("cluster_id").cumcount(ascending=False) < 12, ["demand", "cpu_util"]] = np.nan
    frame.to_csv(folder / "data.csv", index=False)
    return folder


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_forecast_writes_mean_and_quantiles(model_and_data, suffix):
    out = model_and_data / f"forecast{suffix}"
    result = run("forecast", "--model", str(model_and_data / "model"), "--data", str(model_and_data / "data.csv"),
                 "--horizon", "12", "--samples", "50", "--quantiles", "0.1,0.5,0.9", "--out", str(out))
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(table.columns) == ["cluster_id", "timestamp", "mean", "q0.1", "q0.5", "q0.9"]
    assert len(table) == 3 * 12
    assert (table["q0.1"] <= table["q0.5"]).all() and (table["q0.5"] <= table["q0.9"]).all()


def test_forecast_on_bad_data_fails_clearly_and_writes_nothing(model_and_data):
    bad = pd.read_csv(model_and_data / "data.csv")
    bad.loc[5, "demand"] = -1
    bad.to_csv(model_and_data / "bad.csv", index=False)
    out = model_and_data / "never.csv"
    previous = model_and_data / "previous.csv"
    previous.write_text("keep me\n")
    for target in (out, previous):
        result = run("forecast", "--model", str(model_and_data / "model"), "--data", str(model_and_data / "bad.csv"),
                     "--out", str(target), "--horizon", "12")
        assert result.returncode == 2
        assert "bad.csv, column 'demand', cluster 'cluster-000', row 6: demand is negative" in result.stderr
        assert "Traceback" not in result.stderr
    assert not out.exists()
    assert previous.read_text() == "keep me\n"
    assert not list(model_and_data.glob(".*.tmp"))


def test_forecast_rejects_bad_quantiles_and_a_missing_model(model_and_data):
    result = run("forecast", "--model", str(model_and_data / "model"), "--data", str(model_and_data / "data.csv"),
                 "--out", str(model_and_data / "x.csv"), "--quantiles", "0.5,1.5")
    assert result.returncode == 2 and "strictly between 0 and 1" in result.stderr
    result = run("forecast", "--model", str(model_and_data / "nope"), "--data", str(model_and_data / "data.csv"),
                 "--out", str(model_and_data / "x.csv"))
    assert result.returncode == 2 and "not a shadowcast model folder" in result.stderr


def test_train_with_unknown_key_exits_2_naming_it(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("trainer:\n  epochs: 3\n")
    result = run("train", "--config", str(config))
    assert result.returncode == 2
    assert "c.yaml: trainer.epochs: unknown key" in result.stderr


def test_demo_runs_end_to_end_on_a_small_config(tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text(
        "data: {synthetic: {num_clusters: 4, days: 21}}\nhorizon: 24\n"
        "model: {context_length: 48, hidden_size: 16, num_layers: 1}\n"
        "trainer: {batches_per_epoch: 10, max_epochs: 2, progress_bar: false}\n"
        "mlflow: {experiment: demo-test, register_as: demo-test-dpe}\nnum_samples: 50\n")
    result = run("demo", "--config", str(config), "--out-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "shadowcast DeepAR" in result.stdout and "seasonal naive (24 steps)" in result.stdout
    table = result.stdout.split("unserved %\n")[1].split("\n\n")[0].strip().splitlines()
    policies = [line.split()[0] for line in table]
    assert policies == ["static", "reactive", "reactive+warmpool", "predictive-point", "shadowcast", "oracle"]
    oracle = next(line for line in result.stdout.splitlines() if line.startswith("oracle"))
    assert oracle.split()[-2] == "1.000"  # cost ÷ oracle of the oracle itself
    for name in ("data.csv", "forecast.csv", "test_fan_chart.png", "train/model/model.json", "simulate/frontier.png"):
        assert (tmp_path / "out" / name).exists(), name


def test_a_saved_model_forecasts_without_importing_lightning(model_and_data):
    code = (
        "import sys\n"
        "from forecasting.data import read_panel\n"
        "from forecasting.predictor import load_predictor\n"
        f"p = load_predictor({str(model_and_data / 'model')!r})\n"
        f"panel = read_panel({str(model_and_data / 'data.csv')!r}, known_covariates=p.metadata.known.names,"
        " past_covariates=p.metadata.past.names)\n"
        "p.predict(panel, 12, 10)\n"
        "print(sorted(m for m in ('lightning', 'pytorch_lightning', 'gluonts', 'optuna', 'mlflow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

"""`shadowcast evaluate` / `compare` end to end, the lazy model-family registry, and the GluonTS
DeepAR adapter (one small fit of a few batches). MLflow tracks to the session's temporary store."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from forecasting.backtest import BacktestConfig, backtest, visible
from forecasting.baselines import GluonTSDeepAR, SeasonalNaive
from forecasting.data import DEMAND, ID, read_panel
from forecasting.synthetic import SyntheticSpec, generate_frame, generate_panel
from pipelines.cli import app
from pipelines.evaluate import FAMILIES, EvaluateConfig, Family, ModelSpec, build_forecaster, run_evaluation
from pipelines.settings import load_config, parse_config

BIN = Path(sys.executable).parent / "shadowcast"
PROJECT = Path(__file__).resolve().parent.parent
CLI_EXPERIMENT = "test-evaluate-cli"


def shadowcast(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=300, env={**os.environ})


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("evaluate") / "demand.csv"
    generate_frame(SyntheticSpec(num_clusters=3, days=14, seed=2)).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def cli_runs(data_file) -> dict[str, str]:
    """Two seasonal baselines evaluated through the real command: family → run id."""
    runs = {}
    for family in ("seasonal-naive", "seasonal-bootstrap"):
        result = shadowcast("evaluate", "--model", family, "--data", str(data_file), "--known-covariates",
                            "temperature,event", "--past-covariates", "cpu_util", "--horizon", "24", "--windows", "2",
                            "--num-samples", "40", "--experiment", CLI_EXPERIMENT)
        assert result.returncode == 0, result.stderr
        assert "window 2/2" in result.stdout and "mean_wql" in result.stdout
        runs[family] = result.stdout.split("MLflow run ")[1].split()[0]
    return runs


def test_an_evaluation_is_one_mlflow_run_with_tags_metrics_and_figures(cli_runs, data_file):
    client = mlflow.MlflowClient()
    run = client.get_run(cli_runs["seasonal-naive"])
    assert run.data.tags["model_family"] == "seasonal-naive"
    assert run.data.tags["dataset"] == str(data_file)
    assert len(run.data.tags["git_commit"]) >= 7
    assert run.data.params["backtest.windows"] == "2" and run.data.params["backtest.horizon"] == "24"
    for name in ("mean_wql", "crps", "nd", "mase", "coverage_0.5", "coverage_0.9", "coverage_0.99",
                 "interval_coverage_90", "calibration_error", "wql_0.1", "wql_0.9"):
        assert np.isfinite(run.data.metrics[name]), name
    assert [m.step for m in client.get_metric_history(run.info.run_id, "window/mean_wql")] == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"calibration.png", "fan_chart.png", "calibration.csv", "per_window.csv", "per_cluster.csv",
            "evaluate_config.yaml"} <= artifacts
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="calibration.png"))
    assert local.read_bytes()[:4] == b"\x89PNG"
    per_cluster = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                                  artifact_path="per_cluster.csv"))
    assert len(per_cluster) == 2 * 3

    # the logged figure is the backtest's own, not something near it
    panel = read_panel(data_file, known_covariates=["temperature", "event"], past_covariates=["cpu_util"])
    direct = backtest(SeasonalNaive(), panel, BacktestConfig(horizon=24, windows=2, num_samples=40))
    assert run.data.metrics["mean_wql"] == pytest.approx(direct.aggregate["mean_wql"], rel=1e-9)
    assert run.data.metrics["mase"] == pytest.approx(direct.aggregate["mase"], rel=1e-9)


def test_compare_ranks_runs_by_the_chosen_metric(cli_runs):
    client = mlflow.MlflowClient()
    metrics = {family: client.get_run(run_id).data.metrics for family, run_id in cli_runs.items()}

    def order(output: str) -> list[str]:
        rows = [line.split() for line in output.splitlines()[1:]]
        return [next(w for w in row if w in metrics) for row in rows]

    result = shadowcast("compare", "--experiment", CLI_EXPERIMENT)
    assert result.returncode == 0, result.stderr
    assert order(result.stdout) == sorted(metrics, key=lambda f: metrics[f]["mean_wql"])
    assert "mean_wql" in result.stdout.splitlines()[0] and "crps" in result.stdout.splitlines()[0]

    result = shadowcast("compare", "--experiment", CLI_EXPERIMENT, "--metric", "coverage_0.9")
    assert result.returncode == 0, result.stderr
    assert order(result.stdout) == sorted(metrics, key=lambda f: abs(metrics[f]["coverage_0.9"] - 0.9))


@pytest.mark.parametrize(("args", "message"), [
    (["evaluate", "--model", "prophet", "--data", "{data}"], "unknown model family 'prophet'"),
    (["evaluate", "--model", "seasonal-naive", "--dataset", "m5"], "unknown dataset 'm5'"),
    (["evaluate", "--model", "seasonal-naive", "--dataset", "m4_hourly", "--data-dir", "/nonexistent/data"],
     "/nonexistent/data/m4_hourly/Hourly-train.csv not found"),
    (["evaluate", "--model", "seasonal-naive", "--data", "/nonexistent/demand.csv"], "file does not exist"),
    (["evaluate", "--model", "seasonal-naive", "--data", "{data}", "-o", "season=24"],
     "model family 'seasonal-naive': bad options {'season': 24}"),
    (["evaluate", "--model", "seasonal-naive", "--data", "{data}", "-o", "period"], "expected KEY=VALUE"),
    (["evaluate", "--model", "seasonal-naive"], "say what to evaluate on"),
    (["evaluate", "--model", "seasonal-naive", "--data", "{data}", "--horizon", "400"],
     "the shortest cluster has 336 observations"),
    (["evaluate", "--model", "seasonal-naive", "--data", "{data}", "--model-uri", "runs:/x/model"],
     "model_uri applies to the 'deepar' family only"),
    (["compare", "--experiment", "no-such-experiment"], "no experiment 'no-such-experiment'"),
    (["compare", "--experiment", CLI_EXPERIMENT, "--metric", "accuracy"], "logged metric 'accuracy'"),
])
def test_bad_input_is_one_clear_line_and_exit_status_2(args, message, data_file, cli_runs):
    result = CliRunner().invoke(app, [a.replace("{data}", str(data_file)) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_the_registry_is_lazy_and_an_unavailable_family_fails_alone(monkeypatch):
    code = ("import sys, pipelines.evaluate, pipelines.compare, pipelines.commands.evaluate, "
            "pipelines.commands.compare; print(sorted(m for m in ('torch', 'lightning', 'gluonts', "
            "'forecasting.estimator', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT)
    assert out.stdout.strip() == "[]"

    def missing(options, horizon, model_uri):
        raise ModuleNotFoundError("No module named 'forecasting.estimator'")

    monkeypatch.setitem(FAMILIES, "deepar", Family("not installed", missing))
    with pytest.raises(ValueError, match="model family 'deepar' is not available here: No module named"):
        build_forecaster(ModelSpec(family="deepar"), 24)
    assert isinstance(build_forecaster(ModelSpec(family="seasonal-naive"), 24), SeasonalNaive)


def test_our_deepar_family_builds_from_options_and_evaluates_a_saved_model(tmp_path, data_file):
    from forecasting.estimator import DeepARForecaster

    built = build_forecaster(ModelSpec(family="deepar", options={"hidden_size": 8, "max_epochs": 1}), 24)
    assert isinstance(built, DeepARForecaster)
    assert (built.config.prediction_length, built.config.hidden_size) == (24, 8)

    panel = read_panel(data_file, known_covariates=["temperature", "event"], past_covariates=["cpu_util"])
    tiny = DeepARForecaster(prediction_length=24, context_length=24, hidden_size=4, num_layers=1,
                            batches_per_epoch=2, max_epochs=1, patience=0, validate=False)
    tiny.fit(panel.cut(48)).predictor.save(tmp_path / "model")
    config = parse_config({"data": {"source": "file", "path": str(data_file),
                                    "known_covariates": ["temperature", "event"], "past_covariates": ["cpu_util"]},
                           "model": {"family": "deepar", "model_uri": str(tmp_path / "model")},
                           "backtest": {"horizon": 24, "windows": 2, "num_samples": 20},
                           "mlflow": {"experiment": "test-evaluate-deepar"}, "fan_chart_clusters": 0}, EvaluateConfig)
    result = run_evaluation(config)
    assert result.backtest.windows[0].forecast.samples.shape == (3, 20, 24)
    assert np.isfinite(result.metrics["mean_wql"])
    assert "fan_chart.png" not in result.artifacts
    assert mlflow.get_run(result.run_id).data.params["model.model_uri"] == str(tmp_path / "model")


def test_evaluate_configs_in_the_repository_parse():
    paths = sorted((PROJECT / "configs").glob("evaluate-*.yaml"))
    assert paths
    for path in paths:
        config = load_config(path, EvaluateConfig)
        assert config.model.family in FAMILIES


# --- GluonTS's DeepAR behind our protocol -----------------------------------------------------------

HORIZON = 12


@pytest.fixture(scope="module")
def gluonts_fit(tmp_path_factory):
    """A small fit (one epoch of 4 batches) on three clusters, one of them 50 times busier."""
    panel = generate_panel(SyntheticSpec(num_clusters=3, days=10, seed=4))
    frame = panel.frame.copy()
    frame.loc[frame[ID] == "cluster-001", DEMAND] *= 50
    panel = panel.replace_frame(frame)
    model = GluonTSDeepAR(HORIZON, context_length=24, num_layers=1, hidden_size=8, dropout_rate=0.0, batch_size=16,
                          num_batches_per_epoch=4, max_epochs=1)
    scratch = tmp_path_factory.mktemp("gluonts-cwd")
    previous = Path.cwd()
    os.chdir(scratch)  # whatever Lightning or GluonTS write by default would land here
    try:
        model.fit(panel.cut(HORIZON))
    finally:
        os.chdir(previous)
    return model, panel, scratch


def test_gluonts_deepar_forecasts_every_cluster_in_panel_order(gluonts_fit):
    model, panel, scratch = gluonts_fit
    assert list(scratch.iterdir()) == []  # no lightning_logs or checkpoints left behind
    seen = visible(panel, HORIZON, HORIZON)
    forecast = model.predict(seen, HORIZON, 30)
    assert forecast.samples.shape == (3, 30, HORIZON)
    assert forecast.cluster_ids == panel.cluster_ids
    assert forecast.starts.equals(pd.DatetimeIndex(seen.last_observed().to_numpy()) + panel.step)
    assert (forecast.samples >= 0).all()  # demand panel: GluonTS's non-negative sampling is on
    assert forecast.samples.std(axis=1).min() > 0  # sample paths, not a point forecast
    medians = np.median(forecast.samples, axis=(1, 2))
    assert medians[1] > 5 * max(medians[0], medians[2])  # the busy cluster's paths stay with its id

    reordered = seen.select(list(reversed(seen.cluster_ids)))
    reordered = reordered.replace_frame(reordered.frame.sort_values(ID, ascending=False, kind="stable")
                                        .reset_index(drop=True))
    again = model.predict(reordered, HORIZON, 30)
    assert again.cluster_ids == list(reversed(panel.cluster_ids))
    assert np.median(again.select(["cluster-001"]).samples) > 5 * np.median(again.select(["cluster-000"]).samples)


def test_gluonts_deepar_data_entries_map_ids_and_covariates(gluonts_fit):
    model, panel, _ = gluonts_fit
    history = panel.cut(HORIZON)
    entries = model._entries(history, future=0)
    ahead = model._entries(visible(panel, HORIZON, HORIZON), future=HORIZON)
    lengths = history.lengths().to_numpy()
    assert [e["feat_static_cat"][0] for e in entries] == [0, 1, 2]
    assert [e["item_id"] for e in entries] == history.cluster_ids
    assert list(model._scaling) == ["temperature", "event", "cpu_util"]  # known-future, then lagged past-only
    for entry, future_entry, length in zip(entries, ahead, lengths, strict=True):
        assert entry["feat_dynamic_real"].shape == (3, length)
        assert future_entry["feat_dynamic_real"].shape == (3, length + HORIZON)
    cpu = history.history().query(f"{ID} == 'cluster-000'")["cpu_util"].to_numpy()
    mean, std = model._scaling["cpu_util"]
    lagged = entries[0]["feat_dynamic_real"][2] * std + mean
    np.testing.assert_allclose(lagged[HORIZON:], cpu[:-HORIZON], rtol=1e-5)  # value of `horizon` steps before
    lagged_ahead = ahead[0]["feat_dynamic_real"][2] * std + mean
    np.testing.assert_allclose(lagged_ahead[-HORIZON:], cpu[-HORIZON:], rtol=1e-5)  # all known at the origin


def test_gluonts_deepar_refuses_what_it_cannot_answer(gluonts_fit):
    model, panel, _ = gluonts_fit
    seen = visible(panel, HORIZON, HORIZON)
    with pytest.raises(ValueError, match="trained for prediction_length=12; asked for a horizon of 6"):
        model.predict(seen, 6, 10)
    other = generate_panel(SyntheticSpec(num_clusters=4, days=10, seed=4)).select(["cluster-003"])
    with pytest.raises(ValueError, match=r"clusters \['cluster-003'\] were not in the panel"):
        model.predict(visible(other, HORIZON, HORIZON), HORIZON, 10)
    with pytest.raises(ValueError, match="past_covariates must be 'lagged' or 'ignore'"):
        GluonTSDeepAR(HORIZON, past_covariates="future")
    with pytest.raises(RuntimeError, match="call fit"):
        GluonTSDeepAR(HORIZON).predict(seen, HORIZON, 10)


def test_gluonts_deepar_evaluation_run(gluonts_fit, data_file):
    config = parse_config({
        "data": {"source": "file", "path": str(data_file), "known_covariates": ["temperature", "event"]},
        "model": {"family": "gluonts-deepar", "options": {"num_layers": 1, "hidden_size": 8, "dropout_rate": 0.0,
                                                         "context_length": 24,
                                                         "num_batches_per_epoch": 3, "max_epochs": 1}},
        "backtest": {"horizon": 24, "windows": 1, "num_samples": 20},
        "mlflow": {"experiment": "test-evaluate-gluonts"}}, EvaluateConfig)
    result = run_evaluation(config)
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["model_family"] == "gluonts-deepar"
    assert run.data.params["model.max_epochs"] == "1"
    assert np.isfinite(run.data.metrics["mean_wql"]) and run.data.metrics["fit_seconds"] > 0


# --- The public benchmark (needs ../shared/data) -----------------------------------------------------

def test_seasonal_naive_on_m4_hourly_matches_the_published_figures(shared_data_dir):
    config = parse_config({"data": {"source": "dataset", "dataset": "m4_hourly", "data_dir": str(shared_data_dir)},
                           "model": {"family": "seasonal-naive"}, "backtest": {"num_samples": 1},
                           "mlflow": {"experiment": "test-evaluate-m4"}, "fan_chart_clusters": 2}, EvaluateConfig)
    result = run_evaluation(config)
    assert result.horizon == 48 and result.metrics["num_items"] == 414
    assert result.metrics["mean_wql"] == pytest.approx(0.048, abs=0.0005)  # GluonTS evaluations/README
    assert result.metrics["mase"] == pytest.approx(1.193, abs=0.001)  # the M4 competition's sNaive MASE, hourly

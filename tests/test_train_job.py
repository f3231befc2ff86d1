"""The training job end to end: MLflow run contents, the registered model, loading it back."""

import mlflow
import numpy as np
import pytest

from forecasting.predictor import load_predictor
from pipelines.settings import ConfigError, TrainConfig, load_config, parse_config
from pipelines.sources import load_panel
from pipelines.train import train

SMALL = {
    "data": {"synthetic": {"num_clusters": 4, "days": 21, "seed": 1}},
    "horizon": 12,
    "model": {"context_length": 24, "hidden_size": 16, "num_layers": 1},
    "trainer": {"batch_size": 32, "batches_per_epoch": 10, "max_epochs": 3, "patience": 0, "progress_bar": False},
    "mlflow": {"experiment": "test-train-job", "register_as": "test-dpe"},
    "num_samples": 20,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    config = parse_config({**SMALL, "output_dir": str(tmp_path_factory.mktemp("train"))})
    panel = load_panel(config.data)
    return config, panel, train(config, panel, run_name="unit")


def test_run_holds_params_epoch_losses_scores_and_fan_chart(trained):
    config, _, result = trained
    run = mlflow.get_run(result.run_id)
    assert run.data.params["model.hidden_size"] == "16"
    assert run.data.params["trainer.max_epochs"] == "3"
    assert run.data.tags["model_family"] == "deepar"
    for name in ("val_mean_wql", "val_interval_coverage_90", "train_seconds"):
        assert name in run.data.metrics
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "val_loss")
    assert sorted(m.step for m in history) == [0, 1, 2]
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id)]
    assert "fan_chart.png" in artifacts
    assert result.fan_chart.read_bytes()[:4] == b"\x89PNG"
    assert 0 < result.metrics["val_mean_wql"] < 1


def test_model_is_registered_and_loads_back_to_identical_forecasts(trained):
    config, panel, result = trained
    assert result.registered_version is not None
    history = panel.cut(config.horizon)
    direct = result.forecaster.predict(history, 12, 15, seed=2).samples
    for uri in (f"models:/test-dpe/{result.registered_version}", result.model_uri, str(result.model_dir)):
        np.testing.assert_array_equal(load_predictor(uri).predict(history, 12, 15, seed=2).samples, direct)


def test_first_registered_version_becomes_champion_and_later_ones_do_not(trained, tmp_path):
    config, panel, result = trained
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("test-dpe", "champion").version) == result.registered_version
    again = train(parse_config({**SMALL, "output_dir": str(tmp_path)}), panel, run_name="second")
    assert again.registered_version != result.registered_version
    assert str(client.get_model_version_by_alias("test-dpe", "champion").version) == result.registered_version


def test_pyfunc_flavour_serves_quantiles(trained):
    config, panel, result = trained
    model = mlflow.pyfunc.load_model(result.model_uri)
    history = panel.cut(config.horizon)
    out = model.predict(history.frame, params={"horizon": 6, "num_samples": 10})
    assert set(out.columns) >= {"cluster_id", "timestamp", "mean", "q0.5", "q0.95"}
    assert len(out) == 4 * 6


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trainer:\n  max_epochs: 2\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: trainer\.learning_rate: unknown key"):
        load_config(path)


def test_bad_values_are_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  hidden_size: 0\n  distribution: gaussian\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "model.hidden_size: Input should be greater than or equal to 1" in str(err.value)
    assert "model.distribution" in str(err.value)


def test_file_source_needs_a_path_and_yaml_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="source 'file' needs `path`"):
        parse_config({"data": {"source": "file"}})
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)
    assert isinstance(parse_config({}), TrainConfig)


def test_a_held_out_tail_is_kept_out_of_the_job():
    """`data.hold_out` shows a job the panel as it stood that many steps earlier (a test split kept
    out of training and tuning); the held-out steps stay as future rows, demand unknown."""
    config = parse_config(SMALL)
    full = load_panel(config.data)
    held = load_panel(parse_config({**SMALL, "data": {**SMALL["data"], "hold_out": 24}}).data)
    assert held.cluster_ids == full.cluster_ids
    assert ((full.last_observed() - held.last_observed()) == 24 * full.step).all()
    assert len(held.history()) == len(full.history()) - 24 * len(full.cluster_ids)
    with pytest.raises(ConfigError, match="hold_out"):
        parse_config({**SMALL, "data": {**SMALL["data"], "hold_out": -1}})

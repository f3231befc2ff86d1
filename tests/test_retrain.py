"""Scheduled retraining against a real MLflow registry: first run promotes, the same data again is
skipped, a challenger short of the margin is kept, a better one replaces a bad champion; the
lock keeps runs from overlapping (flock, and a PostgreSQL advisory lock)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from pipelines.retrain import (RetrainConfig, RetrainLocked, RetrainOptions, data_fingerprint, decide,
                               retrain_lock, run_retrain)
from pipelines.settings import ConfigError, parse_config
from pipelines.sources import load_panel

from tests.runtime.conftest import postgres_url  # noqa: F401 - the runtime suite's PostgreSQL server fixture

BIN = Path(sys.executable).parent / "shadowcast"
NAME = "retrain-test-dpe"


def _config(tmp: Path, seed: int = 1, **retrain) -> dict:
    return {
        "data": {"synthetic": {"num_clusters": 4, "days": 21, "seed": seed}},
        "horizon": 12,
        "model": {"context_length": 24, "hidden_size": 16, "num_layers": 1},
        "trainer": {"batch_size": 32, "batches_per_epoch": 10, "max_epochs": 4, "patience": 0, "progress_bar": False},
        "mlflow": {"experiment": "test-retrain", "register_as": NAME},
        "output_dir": str(tmp / f"out-{seed}-{retrain.get('margin', 'default')}"),
        "num_samples": 20,
        "fan_chart_clusters": 0,
        "retrain": {"windows": 2, "num_samples": 20, "lock_file": str(tmp / "retrain.lock"), **retrain},
    }


def _alias() -> str:
    return str(mlflow.MlflowClient().get_model_version_by_alias(NAME, "champion").version)


def _versions() -> int:
    return len(mlflow.MlflowClient().search_model_versions(f"name = '{NAME}'"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retrain")
    return tmp, run_retrain(parse_config(_config(tmp), RetrainConfig))


def test_first_run_promotes_and_records_the_decision(first_run):
    _, outcome = first_run
    assert outcome.decision == "promoted" and "no model had the 'champion' alias" in outcome.reason
    assert outcome.champion_version is None and _alias() == outcome.challenger_version
    run = mlflow.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["retrain.decision"] == "promoted"
    assert run.data.tags["retrain.fingerprint"] == outcome.fingerprint
    assert run.data.tags["retrain.challenger_version"] == outcome.challenger_version
    assert 0 < run.data.metrics["challenger_mean_wql"] < 2
    version = mlflow.MlflowClient().get_model_version(NAME, outcome.challenger_version)
    assert version.tags["retrain.decision"] == "promoted"


def test_same_data_again_is_skipped_by_the_command(first_run):
    tmp, outcome = first_run
    config = tmp / "retrain.yaml"
    config.write_text(yaml.safe_dump(_config(tmp)))
    versions = _versions()
    result = subprocess.run([str(BIN), "retrain", "--config", str(config)], capture_output=True, text=True,
                            timeout=300, env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("skipped: this data and config were already evaluated by run " + outcome.run_id)
    assert _versions() == versions and _alias() == outcome.challenger_version  # nothing trained, nothing moved


@pytest.mark.slow  # a third training run; the rule itself is in test_decision_rule
def test_challenger_short_of_the_margin_is_kept(first_run):
    tmp, first = first_run
    outcome = run_retrain(parse_config(_config(tmp, seed=2, margin=0.99), RetrainConfig))
    assert outcome.decision == "kept", outcome.reason
    assert "the margin of 99.0%" in outcome.reason
    assert outcome.champion_version == first.challenger_version == _alias()
    run = mlflow.get_run(outcome.run_id)
    assert {"challenger_mean_wql", "champion_mean_wql", "improvement"} <= set(run.data.metrics)
    assert mlflow.MlflowClient().get_model_version(NAME, outcome.challenger_version).tags["retrain.decision"] == "kept"


def test_better_challenger_replaces_a_bad_champion(first_run, tmp_path):
    from tests.serve.conftest import register, set_alias, untrained_predictor

    tmp, _ = first_run
    panel = load_panel(parse_config(_config(tmp, seed=3), RetrainConfig).data)
    bad = register(untrained_predictor(panel, seed=5), NAME, tmp_path / "bad")  # random weights
    set_alias(NAME, "champion", bad)
    outcome = run_retrain(parse_config(_config(tmp, seed=3, margin=0.0), RetrainConfig))
    assert outcome.decision == "promoted" and outcome.champion_version == bad, outcome.reason
    assert outcome.challenger_scores["mean_wql"] < outcome.champion_scores["mean_wql"]
    assert _alias() == outcome.challenger_version


@pytest.mark.parametrize("challenger, champion, version, problem, expected, words", [
    (0.30, None, None, None, "promoted", "no model had"),
    (0.30, None, "4", "ValueError: covariates", "promoted", "cannot forecast this data"),
    (0.30, 0.40, "4", None, "promoted", "by 25.0%"),
    (0.392, 0.40, "4", None, "promoted", "by 2.0%"),
    (0.393, 0.40, "4", None, "kept", "less than the margin"),
    (0.45, 0.40, "4", None, "kept", "12.5% worse; it must beat it by the margin of 2.0%"),
])
def test_decision_rule(challenger, champion, version, problem, expected, words):
    decision, reason = decide({"mean_wql": challenger}, None if champion is None else {"mean_wql": champion},
                              version, problem, RetrainOptions(margin=0.02))
    assert decision == expected and words in reason, reason


def test_fingerprint_follows_data_and_settings_not_paths(tmp_path):
    base = parse_config(_config(tmp_path), RetrainConfig)
    panel = load_panel(base.data)
    same = data_fingerprint(panel, base)
    assert data_fingerprint(load_panel(base.data), base) == same
    moved = parse_config({**_config(tmp_path / "elsewhere"), "trainer": {**_config(tmp_path)["trainer"],
                                                                          "progress_bar": True}}, RetrainConfig)
    assert data_fingerprint(panel, moved) == same
    assert data_fingerprint(panel, parse_config(_config(tmp_path, margin=0.1), RetrainConfig)) != same
    frame = panel.frame.copy()
    frame.loc[3, "demand"] += 1
    assert data_fingerprint(panel.replace_frame(frame), base) != same


def test_config_needs_a_registered_model_name(tmp_path):
    raw = _config(tmp_path)
    raw["mlflow"]["register_as"] = None
    with pytest.raises(ConfigError, match="mlflow.register_as must name the registered model"):
        parse_config(raw, RetrainConfig)


def test_a_held_lock_stops_a_second_run_at_once(tmp_path):
    config = parse_config(_config(tmp_path, seed=9), RetrainConfig)
    lock = tmp_path / "retrain.lock"
    with open(lock, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write("pid 4242\n")
        holder.flush()
        with pytest.raises(RetrainLocked, match=r"another retrain run holds the lock \(pid 4242\)"):
            run_retrain(config)
        path = tmp_path / "retrain.yaml"
        path.write_text(yaml.safe_dump(_config(tmp_path, seed=9)))
        result = subprocess.run([str(BIN), "retrain", "--config", str(path)], capture_output=True, text=True,
                                timeout=120, env={**os.environ})
        assert result.returncode == 3 and "busy:" in result.stderr and "Traceback" not in result.stderr
    with retrain_lock("sqlite:///unused.db", lock, NAME):  # free again once the holder lets go
        pass


def test_postgresql_tracking_store_uses_an_advisory_lock(postgres_url, tmp_path):  # noqa: F811
    from tests.runtime.conftest import fresh_postgres_database

    url = fresh_postgres_database(postgres_url)
    with retrain_lock(url, tmp_path / "unused.lock", NAME):
        with pytest.raises(RetrainLocked, match="PostgreSQL advisory lock"):
            with retrain_lock(url, tmp_path / "other.lock", NAME):
                pass
        with retrain_lock(url, tmp_path / "unused.lock", "another-model"):  # per model name
            pass
    with retrain_lock(url, tmp_path / "unused.lock", NAME):
        pass
    assert not (tmp_path / "unused.lock").exists()  # no file lock taken on PostgreSQL


def test_deploy_files_run_the_retrain_command():
    root = Path(__file__).resolve().parent.parent / "deploy"
    job = yaml.safe_load((root / "cronjob.yaml").read_text())
    assert job["kind"] == "CronJob" and job["spec"]["concurrencyPolicy"] == "Forbid"
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["shadowcast", "retrain", "--config"]
    service = (root / "shadowcast-retrain.service").read_text()
    assert "shadowcast retrain --config" in service and "SuccessExitStatus=3" in service  # 3: lock held
    assert "OnCalendar=" in (root / "shadowcast-retrain.timer").read_text()

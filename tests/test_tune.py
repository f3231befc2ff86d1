"""`shadowcast tune`: two worker processes on one SQLite study, nested MLflow runs, best config out."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest

from pipelines.settings import TrainConfig, load_config

BASE = """\
data: {synthetic: {num_clusters: 4, days: 21}}
horizon: 12
model: {hidden_size: 16, num_layers: 1}
trainer: {batches_per_epoch: 8, max_epochs: 3, progress_bar: false}
mlflow: {experiment: tune-test, register_as: null}
num_samples: 30
"""


def test_two_workers_share_one_study_and_write_the_best_config(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "shadowcast"), "tune", "--config", "base.yaml", "--trials", "6",
         "--workers", "2", "--storage", storage, "--study", "pair", "--out", "best.yaml", "--seed", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert result.returncode == 0, result.stderr[-2000:]

    study = optuna.load_study(study_name="pair", storage=storage)
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) >= 6
    assert len({t.user_attrs["worker_pid"] for t in study.trials}) == 2  # both processes ran trials

    best = load_config(tmp_path / "best.yaml", TrainConfig)
    assert best.model.hidden_size == study.best_trial.params["hidden_size"]
    assert best.trainer.lr == pytest.approx(study.best_trial.params["lr"])
    assert f"trial {study.best_trial.number}" in (tmp_path / "best.yaml").read_text().splitlines()[0]

    runs = mlflow.search_runs(experiment_names=["tune-test"], output_format="list")
    parents = {r.info.run_id for r in runs if r.data.tags.get("job") == "tune"}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in parents]
    assert len(parents) == 2 and len(children) >= 6
    assert all("lr" in r.data.params for r in children)


def test_unknown_config_key_fails_before_any_trial(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: {hidden: 3}\n")
    result = subprocess.run([str(Path(sys.executable).parent / "shadowcast"), "tune", "--config", "bad.yaml",
                             "--storage", f"sqlite:///{tmp_path / 'o.db'}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "model.hidden: unknown key" in result.stderr

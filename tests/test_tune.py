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
    assert best.trainer.lr_schedule == study.best_trial.params["lr_schedule"]
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


def test_the_best_trial_overrides_only_the_knobs_it_searched(tmp_path):
    """A study begun before `lr_schedule` was searched: its best trial leaves the base's schedule."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from pipelines.settings import parse_config
    from pipelines.tune import TuneOptions, best_config

    options = TuneOptions(trials=1, storage=f"sqlite:///{tmp_path / 'old.db'}", study_name="old")
    study = optuna.create_study(study_name="old", storage=options.storage)
    params = {"context_length": 24, "hidden_size": 20, "num_layers": 2, "dropout": 0.1,
              "distribution": "student_t", "lr": 0.004}
    distributions = {"context_length": CategoricalDistribution([12, 24]), "hidden_size": CategoricalDistribution([20, 40]),
                     "num_layers": IntDistribution(1, 3), "dropout": FloatDistribution(0.0, 0.3),
                     "distribution": CategoricalDistribution(["student_t"]), "lr": FloatDistribution(1e-4, 1e-2)}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=0.2))
    base = parse_config({"data": {"synthetic": {"num_clusters": 2}}, "horizon": 12,
                         "trainer": {"lr_schedule": "plateau", "batch_size": 16}})
    best, score, number = best_config(base, options)
    assert (score, number) == (0.2, 0)
    assert (best.model.context_length, best.model.hidden_size, best.model.num_layers) == (24, 20, 2)
    assert best.trainer.lr == 0.004
    assert (best.trainer.lr_schedule, best.trainer.batch_size) == ("plateau", 16)  # not searched: the base's


def test_trials_are_not_pruned_before_a_quarter_of_their_epochs(tmp_path):
    """Early epochs rank configs poorly: the pruner waits `prune_after` epochs (a quarter of
    max_epochs from the CLI) before it may stop a trial that trails the median."""
    from pipelines.settings import parse_config
    from pipelines.tune import TuneOptions, open_study

    assert TuneOptions.prune_after_for(parse_config({"trainer": {"max_epochs": 40}})) == 10
    assert TuneOptions.prune_after_for(parse_config({"trainer": {"max_epochs": 3}})) == 1
    study = open_study(TuneOptions(trials=3, storage=f"sqlite:///{tmp_path / 'p.db'}", study_name="p", prune_after=3))
    for _ in range(2):  # the pruner's start-up trials
        trial = study.ask()
        for epoch in range(6):
            trial.report(0.1, epoch)
        study.tell(trial, 0.1)
    trailing = study.ask()
    trailing.report(10.0, 1)
    assert not trailing.should_prune()  # epoch 1 < 3: too early to judge
    trailing.report(10.0, 3)
    assert trailing.should_prune()

"""Hyper-parameter search with Optuna: one study in an RDB (SQLite file by default, PostgreSQL by
URL), any number of worker processes sharing it, bad trials pruned from their validation loss.

The objective is the validation window's mean weighted quantile loss. Each trial is a nested
MLflow run under its worker's parent run; the best trial's values are written back over the base
config as a new YAML file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from forecasting.data import Panel
from forecasting.files import atomic_path
from pipelines.settings import TrainConfig, parse_config
from pipelines.train import deepar_config, validation_scores
from pipelines.tracking import git_commit, use_experiment

DEFAULT_STORAGE = "sqlite:///optuna.db"


@dataclass(frozen=True)
class TuneOptions:
    trials: int  # total finished (complete or pruned) trials the study should reach
    storage: str = DEFAULT_STORAGE
    study_name: str = "shadowcast"
    timeout_s: float | None = None
    seed: int | None = None
    threads: int | None = None
    # Epochs a trial runs before the pruner may stop it. Early epochs rank configs poorly (a lower
    # learning rate or a larger network starts slower): with pruning from epoch 1, a 10-trial M4
    # study stopped 7 of 8 challengers at epoch 1. `prune_after_for` gives a quarter of the epochs.
    prune_after: int = 1

    @staticmethod
    def prune_after_for(base: TrainConfig) -> int:
        return max(1, base.trainer.max_epochs // 4)


def search_space(trial: Any, base: TrainConfig, panel: Panel | None) -> dict[str, Any]:
    """The model's main knobs, as nested overrides of the training config."""
    h = base.horizon
    distributions = ["student_t"]
    if panel is None or panel.holds_counts():  # None: only the knobs' names are wanted
        distributions.append("negative_binomial")  # only counts can be negative-binomial
    return {
        "model": {
            "context_length": trial.suggest_categorical("context_length", [h, 2 * h, 3 * h, 4 * h]),
            "hidden_size": trial.suggest_categorical("hidden_size", [20, 40, 64, 96]),
            "num_layers": trial.suggest_int("num_layers", 1, 3),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "distribution": trial.suggest_categorical("distribution", distributions),
        },
        "trainer": {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
                    "lr_schedule": trial.suggest_categorical("lr_schedule", ["plateau", "cosine"])},
    }


def merged(base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    raw = base.model_dump(mode="json")
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    return parse_config(raw, TrainConfig, source="tuned config")


def open_study(options: TuneOptions):
    import optuna

    # SQLite serialises writers: wait for the lock instead of failing when workers commit together.
    engine = {"connect_args": {"timeout": 60}} if options.storage.startswith("sqlite") else {}
    storage = optuna.storages.RDBStorage(options.storage, engine_kwargs=engine)
    return optuna.create_study(
        study_name=options.study_name, storage=storage, direction="minimize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=options.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=options.prune_after),
    )


def run_worker(base: TrainConfig, panel: Panel, options: TuneOptions) -> None:
    """Run trials until the study holds `options.trials` finished ones (counting every worker's)."""
    import mlflow
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    study = open_study(options)
    use_experiment(base.mlflow.experiment, base.mlflow.tracking_uri)
    history, actuals = panel.cut(base.horizon), panel.actuals(base.horizon)

    def objective(trial: optuna.Trial) -> float:
        from optuna_integration import PyTorchLightningPruningCallback

        from forecasting.estimator import DeepARForecaster

        trial.set_user_attr("worker_pid", os.getpid())
        config = merged(base, search_space(trial, base, panel))
        training = replace(deepar_config(config), progress_bar=False, num_threads=options.threads)
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.set_tags({"optuna_study": options.study_name, "optuna_trial": str(trial.number)})
            mlflow.log_params(trial.params)
            forecaster = DeepARForecaster(training)
            forecaster.fit(panel, callbacks=[PyTorchLightningPruningCallback(trial, monitor="val_loss")])
            scores = validation_scores(forecaster.predict(history, base.horizon, base.num_samples), actuals)
            mlflow.log_metrics(scores)
        return scores["val_mean_wql"]

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    if sum(t.state in finished for t in study.trials) >= options.trials:
        return
    with mlflow.start_run(run_name=f"tune-{options.study_name}-{os.getpid()}"):
        mlflow.set_tags({"model_family": "deepar", "job": "tune", "git_commit": git_commit(),
                         "optuna_study": options.study_name, "dataset": panel.source})
        study.optimize(objective, timeout=options.timeout_s,
                       callbacks=[MaxTrialsCallback(options.trials, states=finished)],
                       catch=(ValueError, RuntimeError))


class _KnobNames:
    """Stands in for a trial to read the search space's layout: every suggestion is the first choice."""

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return choices[0]

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return low

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return low


def best_config(base: TrainConfig, options: TuneOptions) -> tuple[TrainConfig, float, int]:
    """The base config with the best trial's values, its score and trial number."""
    study = open_study(options)
    try:
        best = study.best_trial
    except ValueError:
        raise ValueError(f"study {options.study_name!r} has no completed trial yet") from None
    # Which section each searched knob belongs to, read off the search space itself (a study begun
    # before a knob was added lacks it: the base config's value stands).
    sections = search_space(_KnobNames(), base, panel=None)
    overrides = {section: {k: best.params[k] for k in knobs if k in best.params}
                 for section, knobs in sections.items()}
    return merged(base, overrides), float(best.value), best.number


def write_config(config: TrainConfig, path: Path, note: str) -> Path:
    text = f"# {note}\n" + yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path

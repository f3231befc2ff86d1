"""Scheduled retraining: train a challenger, backtest it against the champion, promote if better.

One run (`shadowcast retrain --config configs/retrain-demo.yaml`, from cron or a systemd timer):

1. take the retrain lock (a `flock` on `retrain.lock_file`; a PostgreSQL advisory lock when the
   MLflow tracking store is PostgreSQL, so runs on different hosts exclude each other too);
2. load the latest data and fingerprint it (data and the settings that shape the result); if a
   finished decision run already carries that fingerprint, record a `skipped` run and stop:
   running twice on the same data changes nothing;
3. train the challenger (`pipelines.train.train`) on the data *before* the last K backtest
   windows, so neither model is scored on steps the challenger learnt from;
4. backtest challenger and champion on the same K windows (`forecasting.backtest`) and compare
   the configured metric (lower is better);
5. promote (move the alias, e.g. `champion`) only if there is no champion, the champion cannot
   forecast this data, or the challenger is better by `margin` (relative). The decision, its
   reason and both models' scores are one MLflow run, opened before the alias moves: if the move
   fails, that run ends FAILED and a later run evaluates the same data again.

The champion was trained on older data; windows that fall inside its training range score it
optimistically, which only makes promotion harder (the safe side).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field, model_validator

from forecasting.data import Panel
from pipelines.settings import Strict, TrainConfig

TAG = "retrain."  # every tag this job writes starts with it
HEADLINE = ("mean_wql", "crps", "nd", "coverage_0.5", "coverage_0.9", "interval_coverage_90")


class RetrainLocked(RuntimeError):
    """Another retrain run holds the lock."""


class RetrainOptions(Strict):
    alias: str = Field("champion", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    windows: int = Field(2, ge=1)  # K backtest windows of `horizon` steps, held out of the challenger's training
    stride: int | None = Field(None, ge=1)  # steps between window origins; default: the horizon
    metric: Literal["mean_wql", "crps", "nd"] = "mean_wql"  # lower is better
    margin: float = Field(0.02, ge=0, lt=1)  # promote if challenger ≤ champion × (1 − margin)
    num_samples: int = Field(100, ge=1)
    lock_file: Path = Path("runs/retrain.lock")


class RetrainConfig(TrainConfig):
    """A training config (the challenger is trained with it) plus the `retrain:` section."""

    retrain: RetrainOptions = RetrainOptions()

    @model_validator(mode="after")
    def _registers(self) -> RetrainConfig:
        if not self.mlflow.register_as:
            raise ValueError("mlflow.register_as must name the registered model whose alias retrain moves")
        return self


Decision = Literal["promoted", "kept", "skipped"]


@dataclass(frozen=True)
class RetrainOutcome:
    decision: Decision
    reason: str
    fingerprint: str
    run_id: str  # the decision run
    champion_version: str | None  # before this run
    challenger_version: str | None = None
    challenger_scores: dict[str, float] | None = None
    champion_scores: dict[str, float] | None = None

    def summary(self) -> str:
        metric_lines = []
        for who, scores in (("challenger", self.challenger_scores), ("champion", self.champion_scores)):
            if scores:
                metric_lines.append(f"  {who:10s} " + "  ".join(f"{k} {scores[k]:.4f}" for k in HEADLINE if k in scores))
        return "\n".join([f"{self.decision}: {self.reason}",
                          f"  data fingerprint {self.fingerprint[:16]}, decision run {self.run_id}",
                          f"  champion before: {self.champion_version or 'none'}, "
                          f"challenger: {self.challenger_version or '-'}", *metric_lines])


def run_retrain(config: RetrainConfig, panel: Panel | None = None) -> RetrainOutcome | None:
    """One retrain run (module docstring). `None` in the extra processes of a multi-process DDP fit."""
    import mlflow

    from pipelines.tracking import tracking_uri, use_experiment

    if _is_ddp_helper():  # a DDP helper process re-running this command: only help the fit
        return _help_fit(config, panel)
    options = config.retrain
    with retrain_lock(tracking_uri(config.mlflow.tracking_uri), options.lock_file, config.mlflow.register_as):
        if panel is None:
            from pipelines.sources import load_panel

            panel = load_panel(config.data)
        from forecasting.backtest import BacktestConfig, check_fits

        backtest_config = BacktestConfig(config.horizon, options.windows, options.stride, options.num_samples)
        check_fits(panel, backtest_config)  # before minutes of training, not after
        fingerprint = data_fingerprint(panel, config)
        use_experiment(config.mlflow.experiment, config.mlflow.tracking_uri)
        client = mlflow.MlflowClient()
        name = config.mlflow.register_as
        champion = champion_version(client, name, options.alias)
        earlier = _evaluated_before(client, config.mlflow.experiment, fingerprint)
        if earlier is not None:
            reason = f"this data and config were already evaluated by run {earlier.info.run_id} " \
                     f"({earlier.data.tags.get(TAG + 'decision')})"
            return _record(config, fingerprint, "skipped", reason, champion)

        from pipelines.train import train

        # A folder per data fingerprint: checkpoints of different runs never mix.
        run_config = config.model_copy(update={"output_dir": config.output_dir / fingerprint[:12]})
        result = train(run_config, training_panel(panel, backtest_config), run_name="retrain-challenger",
                       tags={TAG + "role": "challenger", TAG + "fingerprint": fingerprint})
        if result is None:
            return None
        challenger = backtest_scores(result.forecaster.predictor, panel, backtest_config, config.trainer.seed)
        champion_scores, champion_problem = None, None
        if champion is not None:
            try:
                from forecasting.predictor import load_predictor

                champion_scores = backtest_scores(load_predictor(f"models:/{name}/{champion}"), panel,
                                                  backtest_config, config.trainer.seed)
            except (ValueError, KeyError, FileNotFoundError) as exc:  # another schema of data or model
                champion_problem = f"{type(exc).__name__}: {exc}"
        decision, reason = decide(challenger, champion_scores, champion, champion_problem, options)
        return _record(config, fingerprint, decision, reason, champion, result.registered_version,
                       challenger, champion_scores, training_run=result.run_id)


def training_panel(panel: Panel, backtest_config: Any) -> Panel:
    """The data before the earliest backtest origin: what the challenger may learn from."""
    return panel.cut(backtest_config.hidden(0)).truncate_future(0)


def _is_ddp_helper() -> bool:
    """`not pipelines.train.is_primary_process()`, without importing the training stack to ask."""
    return any(int(os.environ.get(name, "0")) != 0 for name in ("LOCAL_RANK", "NODE_RANK"))


def _help_fit(config: RetrainConfig, panel: Panel | None) -> None:
    from forecasting.backtest import BacktestConfig
    from pipelines.sources import load_panel
    from pipelines.train import train

    options = config.retrain
    backtest_config = BacktestConfig(config.horizon, options.windows, options.stride, options.num_samples)
    train(config, training_panel(panel or load_panel(config.data), backtest_config))
    return None


def decide(challenger: dict[str, float], champion: dict[str, float] | None, champion_version: str | None,
           champion_problem: str | None, options: RetrainOptions) -> tuple[Decision, str]:
    """Promote or keep, and why (pure: the whole policy in one place)."""
    if champion_version is None:
        return "promoted", f"no model had the {options.alias!r} alias"
    if champion is None:
        return "promoted", f"the champion (version {champion_version}) cannot forecast this data: {champion_problem}"
    metric, ours, theirs = options.metric, challenger[options.metric], champion[options.metric]
    needed = theirs * (1 - options.margin)
    if ours <= needed:
        return "promoted", (f"challenger {metric} {ours:.4f} beats the champion's {theirs:.4f} "
                            f"by {_relative(ours, theirs):.1%} (margin {options.margin:.1%})")
    gain = _relative(ours, theirs)
    verdict = f"{gain:.1%} better, less than" if gain > 0 else f"{-gain:.1%} worse; it must beat it by"
    return "kept", f"challenger {metric} {ours:.4f} vs champion {theirs:.4f}: {verdict} the margin of {options.margin:.1%}"


def backtest_scores(predictor: Any, panel: Panel, config: Any, seed: int) -> dict[str, float]:
    """Pooled backtest metrics of a trained predictor (it is not refitted)."""
    from forecasting.backtest import backtest
    from pipelines.evaluate import Pretrained

    return dict(backtest(Pretrained(predictor, seed), panel, config).aggregate)


def champion_version(client: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None  # no such model or alias yet: the first run
        raise


def data_fingerprint(panel: Panel, config: RetrainConfig) -> str:
    """SHA-256 of the panel's values and of every setting that changes what a run would decide."""
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(panel.frame, index=False).to_numpy().tobytes())
    digest.update(json.dumps([panel.freq, panel.known_covariates, panel.past_covariates]).encode())
    settings = config.model_dump(mode="json", exclude={"output_dir", "fan_chart_clusters", "data"})
    settings["trainer"].pop("progress_bar", None)
    settings["trainer"].pop("num_threads", None)
    settings["retrain"].pop("lock_file", None)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


@contextlib.contextmanager
def retrain_lock(tracking_store: str, lock_file: Path, name: str) -> Iterator[None]:
    """Exclusive for the run's duration; released even if the process dies (kernel `flock`, or the
    PostgreSQL session ending). Raises `RetrainLocked` at once rather than queueing a second run."""
    if tracking_store.startswith(("postgresql", "postgres")):
        with _advisory_lock(tracking_store, name):
            yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise RetrainLocked(f"{lock_file}: another retrain run holds the lock ({handle.read().strip() or 'pid ?'})") \
                from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield


@contextlib.contextmanager
def _advisory_lock(url: str, name: str) -> Iterator[None]:
    import sqlalchemy as sa

    key = int.from_bytes(hashlib.sha256(f"shadowcast-retrain:{name}".encode()).digest()[:8], "big", signed=True)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar():
                raise RetrainLocked(f"another retrain run of {name!r} holds the PostgreSQL advisory lock {key}")
            try:
                yield
            finally:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
    finally:
        engine.dispose()


def _evaluated_before(client: Any, experiment: str, fingerprint: str) -> Any | None:
    found = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id],
        filter_string=f"tags.`{TAG}fingerprint` = '{fingerprint}' and tags.`{TAG}decision` != 'skipped' "
                      "and attributes.status = 'FINISHED'",
        max_results=1, order_by=["attributes.start_time DESC"])
    return found[0] if found else None


def _record(config: RetrainConfig, fingerprint: str, decision: Decision, reason: str, champion: str | None,
            challenger: str | None = None, challenger_scores: dict[str, float] | None = None,
            champion_scores: dict[str, float] | None = None, training_run: str | None = None) -> RetrainOutcome:
    """The decision run; the alias moves inside it, so a failed move leaves that run FAILED."""
    import mlflow

    from pipelines.tracking import git_commit

    options, name = config.retrain, config.mlflow.register_as
    tags = {TAG + "decision": decision, TAG + "reason": reason, TAG + "fingerprint": fingerprint,
            TAG + "model": name, TAG + "alias": options.alias, TAG + "champion_version": champion or "none",
            TAG + "challenger_version": challenger or "none", TAG + "challenger_run": training_run or "none",
            "git_commit": git_commit()}
    with mlflow.start_run(run_name=f"retrain-{decision}") as run:
        mlflow.set_tags(tags)
        mlflow.log_params({"retrain.metric": options.metric, "retrain.margin": options.margin,
                           "retrain.windows": options.windows, "horizon": config.horizon})
        for who, scores in (("challenger", challenger_scores), ("champion", champion_scores)):
            if scores:
                mlflow.log_metrics({f"{who}_{k}": v for k, v in scores.items() if k in HEADLINE or k == options.metric})
        if challenger_scores and champion_scores:
            mlflow.log_metric("improvement", _relative(challenger_scores[options.metric], champion_scores[options.metric]))
        if challenger is not None:
            client = mlflow.MlflowClient()
            client.set_model_version_tag(name, challenger, TAG + "decision", decision)
            client.set_model_version_tag(name, challenger, TAG + options.metric,
                                         f"{challenger_scores[options.metric]:.6g}")
            if decision == "promoted":
                client.set_registered_model_alias(name, options.alias, challenger)
    return RetrainOutcome(decision, reason, fingerprint, run.info.run_id, champion, challenger,
                          challenger_scores, champion_scores)


def _relative(ours: float, theirs: float) -> float:
    """How much lower (better) ours is than theirs, as a fraction of theirs."""
    return (theirs - ours) / theirs if theirs else 0.0

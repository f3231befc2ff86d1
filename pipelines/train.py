"""The training job: panel → DeepAR fit → validation scores, fan chart and model in MLflow.

Each run logs the flattened config as parameters, per-epoch losses, the validation window's mean
weighted quantile loss and coverage, a fan chart, and the model (an MLflow pyfunc model wrapping
the torch-only predictor folder), registered under `mlflow.register_as`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forecasting.data import Panel
from forecasting.estimator import DeepARConfig, DeepARForecaster
from forecasting.forecast import Forecast
from forecasting.metrics import interval_coverage, mean_weighted_quantile_loss, quantile_coverage
from pipelines.plots import fan_chart
from pipelines.settings import TrainConfig
from pipelines.tracking import git_commit, use_experiment


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_dir: Path
    model_uri: str  # runs:/… of the logged MLflow model
    registered_version: str | None
    metrics: dict[str, float]
    fan_chart: Path | None
    forecaster: DeepARForecaster


def deepar_config(config: TrainConfig, checkpoint_dir: Path | None = None) -> DeepARConfig:
    model = config.model.model_dump()
    model["lags"] = tuple(model["lags"]) if model["lags"] else None
    trainer = config.trainer.model_dump()
    trainer["validate"] = trainer.pop("validation")
    return DeepARConfig(prediction_length=config.horizon, **model, **trainer,
                        checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None)


def validation_scores(forecast: Forecast, actuals) -> dict[str, float]:
    return {
        "val_mean_wql": mean_weighted_quantile_loss(forecast, actuals),
        "val_interval_coverage_90": interval_coverage(forecast, actuals, 0.9),
        "val_coverage_q0.5": quantile_coverage(forecast, actuals, 0.5),
        "val_coverage_q0.9": quantile_coverage(forecast, actuals, 0.9),
    }


def is_primary_process() -> bool:
    """False in the extra processes Lightning's DDP launcher starts (they re-run the same command)."""
    return all(int(os.environ.get(name, "0")) == 0 for name in ("LOCAL_RANK", "NODE_RANK"))


def train(config: TrainConfig, panel: Panel, *, run_name: str = "train",
          tags: dict[str, str] | None = None) -> TrainResult | None:
    """Fit on `panel` (its last `horizon` steps are the validation window) and log everything.

    Under multi-process DDP only the primary process logs and registers; the others only take
    part in the fit and get `None`."""
    import mlflow

    output = Path(config.output_dir)
    forecaster = DeepARForecaster(deepar_config(config, output / "checkpoints"))
    if not is_primary_process():
        forecaster.fit(panel)
        return None
    use_experiment(config.mlflow.experiment, config.mlflow.tracking_uri)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags({"model_family": "deepar", "dataset": panel.source, "git_commit": git_commit(), **(tags or {})})
        mlflow.log_params(_flatten(config.model_dump(mode="json")))
        mlflow.log_params({"panel.clusters": len(panel.cluster_ids), "panel.freq": panel.freq,
                           "panel.rows": len(panel.history())})
        forecaster.fit(panel, callbacks=[_epoch_logger()])
        summary = forecaster.summary
        mlflow.log_metrics({"train_seconds": summary.train_seconds, "train_samples_per_s": summary.samples_per_second,
                            "epochs": summary.epochs})

        history = panel.cut(config.horizon)
        actuals = panel.actuals(config.horizon)
        forecast = forecaster.predict(history, config.horizon, config.num_samples, seed=config.trainer.seed)
        metrics = validation_scores(forecast, actuals) if config.trainer.validation else {}
        if metrics:
            mlflow.log_metrics(metrics)
        else:  # the last window was trained on: its scores would flatter the model
            mlflow.set_tag("validation", "none: trained on every step (trainer.validation: false)")

        chart = None
        if config.fan_chart_clusters:
            chart = fan_chart(forecast, history, output / "fan_chart.png", actuals=actuals,
                              max_clusters=config.fan_chart_clusters)
            mlflow.log_artifact(str(chart))

        model_dir = forecaster.predictor.save(output / "model")
        model_uri, version = log_model(model_dir, config.mlflow.register_as)
        if version and config.mlflow.initial_alias:
            claim_alias_if_free(config.mlflow.register_as, config.mlflow.initial_alias, version)
    return TrainResult(run.info.run_id, model_dir, model_uri, version, metrics, chart, forecaster)


def log_model(model_dir: Path, register_as: str | None) -> tuple[str, str | None]:
    """Log the predictor folder as an MLflow pyfunc model in the active run; register it if asked."""
    import mlflow

    from forecasting.forecast import DEFAULT_QUANTILES, quantile_column
    from forecasting.predictor import DeepARPredictor

    meta = DeepARPredictor.load(model_dir).metadata
    with warnings.catch_warnings():
        # MLflow asks for an input example; the explicit signature already describes the input.
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        from pipelines import mlflow_model

        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=mlflow_model.__file__,  # a model from code: nothing pickled
            artifacts={"predictor": str(model_dir)},
            signature=mlflow_model.signature(meta.known.names, meta.past.names,
                                             [quantile_column(q) for q in DEFAULT_QUANTILES]),
            # Given explicitly: inferring requirements would load the model in a subprocess (slow).
            pip_requirements=["shadowcast", "torch", "pandas", "numpy"],
            registered_model_name=register_as,
        )
    version = str(info.registered_model_version) if register_as and info.registered_model_version else None
    return info.model_uri, version


def claim_alias_if_free(model_name: str, alias: str, version: str) -> bool:
    """Point `alias` at `version` unless some version of the model already holds it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        client.get_model_version_by_alias(model_name, alias)
        return False
    except MlflowException:
        client.set_registered_model_alias(model_name, alias, version)
        mlflow.set_tag("alias_set", alias)
        return True


def _epoch_logger():
    import lightning.pytorch as pl
    import mlflow

    class MlflowEpochLogger(pl.Callback):
        """Per-epoch losses into the active MLflow run (step = epoch)."""

        def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            values = {k: float(v) for k, v in trainer.callback_metrics.items() if k in {"train_loss", "val_loss"}}
            if values and trainer.is_global_zero:
                mlflow.log_metrics(values, step=trainer.current_epoch)

    return MlflowEpochLogger()


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat

"""The evaluation job: a model family × a data source → rolling-origin backtest → one MLflow run.

Every run carries the same tags (`dataset`, `model_family`, `git_commit`), parameters and metric
names, so runs of different families line up column by column in the MLflow UI and in
`shadowcast compare`. Metrics are the backtest's pooled scores (`forecasting.metrics`), plus
`window/<metric>` per window (step = window index). Artifacts: `calibration.png` (+ `.csv`),
`fan_chart.png` (last window), `per_window.csv`, `per_cluster.csv`, `evaluate_config.yaml`.

Model families are built lazily: a family's modules (GluonTS, our DeepAR) are imported only when
that family is asked for, so one that is missing or broken fails only its own evaluations.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, field_validator

from forecasting.backtest import BacktestConfig, BacktestResult, WindowResult, backtest, check_fits, visible
from forecasting.data import Panel
from forecasting.forecast import Forecast, Forecaster
from forecasting.metrics import calibration
from forecasting.seasonality import season_length
from pipelines.settings import DataConfig, Strict

# Metrics also logged per window, and printed first.
HEADLINE = ("mean_wql", "crps", "nd", "mase", "coverage_0.5", "coverage_0.9", "coverage_0.99", "interval_coverage_90")


class UnavailableFamily(ValueError):
    """A model family whose code cannot be imported here."""


@dataclass(frozen=True)
class Family:
    description: str
    build: Callable[[dict[str, Any], int, str | None], Forecaster]  # (options, horizon, model_uri)


def _seasonal_naive(options: dict[str, Any], horizon: int, model_uri: str | None) -> Forecaster:
    from forecasting.baselines import SeasonalNaive

    return SeasonalNaive(**options)


def _seasonal_bootstrap(options: dict[str, Any], horizon: int, model_uri: str | None) -> Forecaster:
    from forecasting.baselines import SeasonalBootstrap

    return SeasonalBootstrap(**options)


def _gluonts_deepar(options: dict[str, Any], horizon: int, model_uri: str | None) -> Forecaster:
    from importlib.util import find_spec

    from forecasting.baselines import GluonTSDeepAR

    if find_spec("gluonts") is None:  # fail now, not after the data is loaded and the run started
        raise ImportError("No module named 'gluonts'")
    return GluonTSDeepAR(**{"prediction_length": horizon, **options})


def _deepar(options: dict[str, Any], horizon: int, model_uri: str | None) -> Forecaster:
    if model_uri:
        from forecasting.predictor import load_predictor

        if options:
            raise ValueError(f"model options {sorted(options)} do not apply to a saved model ({model_uri})")
        return Pretrained(load_predictor(model_uri))
    from forecasting.estimator import DeepARConfig, DeepARForecaster

    return DeepARForecaster(DeepARConfig(**{"prediction_length": horizon, **options}))


FAMILIES: dict[str, Family] = {
    "seasonal-naive": Family("the value one season earlier (a point forecast)", _seasonal_naive),
    "seasonal-bootstrap": Family("seasonal naive plus resampled seasonal errors", _seasonal_bootstrap),
    "gluonts-deepar": Family("GluonTS's own torch DeepAR (reference implementation)", _gluonts_deepar),
    "deepar": Family("shadowcast's DeepAR (forecasting.estimator), or a saved one via model_uri", _deepar),
}


class Pretrained:
    """A saved model behind the protocol: `fit` does nothing. Windows that fall inside the range it
    was trained on score optimistically; backtest it on data after its training cut-off."""

    def __init__(self, predictor: Any, seed: int = 0) -> None:
        self.predictor, self.seed = predictor, seed

    def fit(self, panel: Panel) -> None:
        return None

    def predict(self, panel: Panel, horizon: int, num_samples: int) -> Forecast:
        return self.predictor.predict(panel, horizon, num_samples, seed=self.seed)


class ModelSpec(Strict):
    family: str
    options: dict[str, Any] = {}  # keyword arguments of the family's forecaster (or DeepARConfig)
    model_uri: str | None = None  # `deepar` only: a model folder, runs:/…/model or models:/name/version

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        if family not in FAMILIES:
            raise ValueError(f"unknown model family {family!r}; choose one of {sorted(FAMILIES)}")
        return family


class BacktestSettings(Strict):
    horizon: int | None = Field(None, ge=1)  # default: the dataset's own horizon, else one season
    windows: int = Field(1, ge=1)
    stride: int | None = Field(None, ge=1)  # default: the horizon
    refit: bool = False
    num_samples: int = Field(100, ge=1)
    seasonality: int | None = Field(None, ge=1)  # MASE's period; default from the frequency, as GluonTS


class TrackingConfig(Strict):
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db
    experiment: str = "shadowcast-evaluate"


class EvaluateConfig(Strict):
    data: DataConfig
    model: ModelSpec
    backtest: BacktestSettings = BacktestSettings()
    mlflow: TrackingConfig = TrackingConfig()
    output_dir: Path | None = None  # also keep the artifacts here; default: only in MLflow
    fan_chart_clusters: int = Field(4, ge=0)


@dataclass(frozen=True)
class EvaluateResult:
    run_id: str
    dataset: str
    horizon: int
    backtest: BacktestResult
    metrics: dict[str, float]
    artifacts: list[str]


def build_forecaster(spec: ModelSpec, horizon: int) -> Forecaster:
    """The family's forecaster; bad options and missing code are reported as errors naming the family."""
    family = FAMILIES[spec.family]
    if spec.model_uri and spec.family != "deepar":
        raise ValueError(f"model_uri applies to the 'deepar' family only, not {spec.family!r}")
    try:
        return family.build(dict(spec.options), horizon, spec.model_uri)
    except ImportError as exc:
        raise UnavailableFamily(f"model family {spec.family!r} is not available here: {exc}") from None
    except TypeError as exc:  # an unknown or misspelt option
        raise ValueError(f"model family {spec.family!r}: bad options {spec.options}: {exc}") from None


def load_source(data: DataConfig) -> tuple[Panel, int | None, str]:
    """The panel, its customary horizon (public datasets only) and a short name for the `dataset` tag."""
    if data.source == "dataset":
        from forecasting.datasets import load_dataset

        assert data.dataset is not None  # checked by DataConfig
        options = {"resample": data.resample} if data.resample else {}
        dataset = load_dataset(data.dataset, data.data_dir, **options)
        return dataset.panel, dataset.horizon, dataset.name
    from pipelines.sources import load_panel

    panel = load_panel(data)
    name = str(data.path) if data.source == "file" else f"synthetic(seed={data.synthetic.seed})"
    return panel, None, name


def run_evaluation(
    config: EvaluateConfig, *, run_name: str | None = None, progress: Callable[[str], None] | None = None,
) -> EvaluateResult:
    """Backtest the configured family on the configured data and record everything in one MLflow run."""
    panel, dataset_horizon, dataset = load_source(config.data)
    settings = config.backtest
    horizon = settings.horizon or dataset_horizon or season_length(panel.freq)
    backtest_config = BacktestConfig(horizon=horizon, windows=settings.windows, stride=settings.stride,
                                     num_samples=settings.num_samples, refit=settings.refit,
                                     seasonality=settings.seasonality)
    check_fits(panel, backtest_config)  # before a run is started for it
    forecaster = build_forecaster(config.model, horizon)

    import mlflow

    from pipelines.tracking import git_commit, use_experiment

    use_experiment(config.mlflow.experiment, config.mlflow.tracking_uri)
    name = run_name or f"{config.model.family} on {dataset}"
    with mlflow.start_run(run_name=name) as run, tempfile.TemporaryDirectory(prefix="evaluate-") as scratch:
        mlflow.set_tags({"dataset": dataset, "model_family": config.model.family, "git_commit": git_commit(),
                         "job": "evaluate", "data_source": config.data.source})
        mlflow.log_params({**_flatten(config.model.options, "model."), "model.family": config.model.family,
                           "model.model_uri": config.model.model_uri,
                           **_flatten(backtest_config.__dict__, "backtest."),
                           "panel.clusters": len(panel.cluster_ids), "panel.freq": panel.freq,
                           "panel.rows": len(panel.history())})

        def on_window(window: WindowResult) -> None:
            scores = window.scores.aggregate
            mlflow.log_metrics({f"window/{k}": scores[k] for k in HEADLINE if _finite(scores[k])}, step=window.index)
            if progress:
                progress(f"window {window.index + 1}/{backtest_config.windows} (origin {window.origins.min()}): "
                         f"mean_wql {scores['mean_wql']:.4f}, fit {window.fit_seconds:.1f} s, "
                         f"predict {window.predict_seconds:.1f} s")

        result = backtest(forecaster, panel, backtest_config, on_window=on_window)
        samples, actuals = result.samples()
        table = calibration(samples, actuals)
        metrics = {**result.aggregate,
                   "calibration_error": float((table["quantile"] - table["level"]).abs().mean()),
                   "fit_seconds": float(sum(w.fit_seconds for w in result.windows)),
                   "predict_seconds": float(sum(w.predict_seconds for w in result.windows))}
        mlflow.log_metrics({k: v for k, v in metrics.items() if _finite(v)})

        folder = Path(config.output_dir or scratch)
        written = _write_artifacts(folder, config, result, table, panel, title=f"{config.model.family} on {dataset}")
        for path in written:
            mlflow.log_artifact(str(path))
    return EvaluateResult(run.info.run_id, dataset, horizon, result, metrics, [p.name for p in written])


def _write_artifacts(folder: Path, config: EvaluateConfig, result: BacktestResult, table, panel: Panel,
                     title: str) -> list[Path]:
    from pipelines.calibration_plot import calibration_plot
    from pipelines.plots import fan_chart

    folder.mkdir(parents=True, exist_ok=True)
    written = [calibration_plot(table, folder / "calibration.png", title=title)]
    table.to_csv(folder / "calibration.csv", index=False)
    result.per_window().to_csv(folder / "per_window.csv")
    result.per_cluster().to_csv(folder / "per_cluster.csv")
    (folder / "evaluate_config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    written += [folder / name for name in ("calibration.csv", "per_window.csv", "per_cluster.csv",
                                           "evaluate_config.yaml")]
    if config.fan_chart_clusters:
        last = result.windows[-1]
        seen = visible(panel, last.hidden, result.config.horizon)
        written.append(fan_chart(last.forecast, seen, folder / "fan_chart.png", actuals=last.actuals,
                                 max_clusters=config.fan_chart_clusters))
    return written


def _flatten(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _finite(value: float) -> bool:
    """NaN or inf aggregates (MASE when a history is constant) are left out of MLflow: they would
    sort arbitrarily in comparisons. The CSV artifacts keep them."""
    return value == value and abs(value) != float("inf")

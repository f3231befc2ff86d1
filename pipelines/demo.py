"""The main job on embedded defaults: generate data → train → forecast a held-out window →
compare with seasonal naive → replay the window through every capacity policy.

What a new user sees first: the model against seasonal naive on data it has never seen, what its
distributions buy when they size capacity (cost and unserved demand against reactive autoscaling,
warm pools, predictive scaling, static provisioning and a perfect-foresight oracle), and where
the plots and the MLflow run are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from forecasting.baselines import SeasonalBootstrap, SeasonalNaive
from forecasting.files import write_table
from forecasting.forecast import Forecast
from forecasting.metrics import interval_coverage, mean_weighted_quantile_loss
from forecasting.seasonality import season_length
from pipelines.plots import fan_chart
from pipelines.settings import TrainConfig
from pipelines.simulate import replay_holdout
from pipelines.sources import load_panel
from pipelines.train import TrainResult, train
from pipelines.tracking import tracking_uri


@dataclass(frozen=True)
class DemoResult:
    table: pd.DataFrame  # one row per forecaster: mean wQL and 90 % interval coverage on the test window
    policies: pd.DataFrame  # one row per capacity policy: cost, cost ÷ oracle, unserved % on the same window
    training: TrainResult
    forecast_file: Path
    fan_chart: Path
    frontier: Path
    data_file: Path


def run_demo(config: TrainConfig, out_dir: Path) -> DemoResult:
    import mlflow

    horizon = config.horizon
    panel = load_panel(config.data)
    data_file = out_dir / "data.csv"
    write_table(panel.frame, data_file)
    history = panel.cut(horizon)  # the last `horizon` steps of every cluster are never seen in training
    actuals = panel.actuals(horizon)

    training = train(config, history, run_name="demo", tags={"job": "demo"})
    model_forecast = training.forecaster.predict(history, horizon, config.num_samples, seed=config.trainer.seed)
    period = season_length(panel.freq)
    candidates: dict[str, Forecast] = {
        "shadowcast DeepAR": model_forecast,
        f"seasonal naive ({period} steps)": SeasonalNaive(period).predict(history, horizon, 1),
        f"seasonal naive ({7 * period} steps)": SeasonalNaive(7 * period).predict(history, horizon, 1),
        "seasonal bootstrap": SeasonalBootstrap(seed=config.trainer.seed).predict(history, horizon, config.num_samples),
    }
    table = pd.DataFrame([
        {"forecaster": name, "mean_wql": mean_weighted_quantile_loss(f, actuals),
         "coverage_90": interval_coverage(f, actuals, 0.9)}
        for name, f in candidates.items()
    ])
    forecast_file = out_dir / "forecast.csv"
    write_table(model_forecast.to_frame(), forecast_file)
    chart = fan_chart(model_forecast, history, out_dir / "test_fan_chart.png", actuals=actuals,
                      max_clusters=config.fan_chart_clusters or 4)
    # The same held-out window, replayed through every capacity policy, sized by these forecasts.
    replay = replay_holdout(history, actuals, model_forecast, out_dir=out_dir / "simulate")
    with mlflow.start_run(run_id=training.run_id):
        mlflow.log_metrics({"test_mean_wql": float(table["mean_wql"].iloc[0]),
                            "test_interval_coverage_90": float(table["coverage_90"].iloc[0])})
        mlflow.log_metrics({f"replay_{row.policy.replace('+', '_')}_{name}": float(getattr(row, name))
                            for row in replay.table.itertuples() for name in ("cost_vs_oracle", "unserved_pct")})
        mlflow.log_artifact(str(chart))
        mlflow.log_artifact(str(replay.frontier_png))
    return DemoResult(table, replay.table, training, forecast_file, chart, replay.frontier_png, data_file)


def format_report(result: DemoResult, config: TrainConfig) -> str:
    lines = [f"Held-out test window: the last {config.horizon} steps of every cluster (never seen in training)", ""]
    lines.append(f"{'forecaster':32s} {'mean wQL':>9s} {'90% coverage':>13s}")
    for row in result.table.itertuples():
        lines.append(f"{row.forecaster:32s} {row.mean_wql:9.4f} {row.coverage_90:13.3f}")
    uri = tracking_uri(config.mlflow.tracking_uri)
    lines += [
        "",
        "mean wQL: mean weighted quantile loss over levels 0.1…0.9 (lower is better);",
        "90% coverage: share of actual values inside the 5 %–95 % band (ideal 0.90).",
        "",
        "The same window replayed through each capacity policy (5-minute cold start, 5 s warm activation,",
        "unserved demand priced at 100× a unit-hour; units sized so each cluster peaks at 50):",
        "",
        f"{'policy':20s} {'setting':20s} {'cost':>10s} {'÷ oracle':>9s} {'unserved %':>11s}",
    ]
    for row in result.policies.itertuples():
        lines.append(f"{row.policy:20s} {row.setting:20s} {row.cost:10.0f} {row.cost_vs_oracle:9.3f} "
                     f"{row.unserved_pct:11.3f}")
    lines += [
        "",
        f"data              {result.data_file}",
        f"forecast          {result.forecast_file}",
        f"fan chart         {result.fan_chart}",
        f"policy frontier   {result.frontier}",
        f"model folder      {result.training.model_dir}",
        f"MLflow run        {result.training.run_id} in {uri}",
    ]
    if result.training.registered_version:
        lines.append(f"registered model  models:/{config.mlflow.register_as}/{result.training.registered_version}")
    lines.append(f"browse runs       mlflow ui --backend-store-uri {uri}")
    return "\n".join(lines)

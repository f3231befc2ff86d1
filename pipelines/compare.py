"""`shadowcast compare`: the runs of one MLflow experiment, ranked by one metric.

Losses (wQL, CRPS, ND, MASE, timings) rank lowest first; coverage metrics rank by their distance
from the nominal level (`coverage_0.9` is best at 0.9), since more coverage is not better.
"""

from __future__ import annotations

import pandas as pd

from forecasting.metrics import nominal_level

COLUMNS = ("mean_wql", "crps", "nd", "mase", "coverage_0.9", "interval_coverage_90")


def compare_runs(experiment: str, metric: str = "mean_wql", *, tracking_uri: str | None = None,
                 limit: int | None = None) -> pd.DataFrame:
    """One row per finished run that logged `metric`, best first."""
    import mlflow

    from pipelines.tracking import tracking_uri as resolve_uri

    uri = resolve_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"no experiment {experiment!r} in {uri}; experiments there: {names}")
    runs = mlflow.search_runs(experiment_ids=[found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              output_format="pandas")
    column = f"metrics.{metric}"
    logged = sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
    if runs.empty:
        raise ValueError(f"experiment {experiment!r} has no finished runs")
    if column not in runs.columns or runs[column].isna().all():
        raise ValueError(f"no run in experiment {experiment!r} logged metric {metric!r}; metrics logged: {logged}")
    runs = runs[runs[column].notna()]
    nominal = nominal_level(metric)
    key = (runs[column] - nominal).abs() if nominal is not None else runs[column]
    runs = runs.assign(_key=key).sort_values(["_key", "start_time"], ascending=[True, False])
    table = pd.DataFrame({
        "rank": range(1, len(runs) + 1),
        "run": runs.get("tags.mlflow.runName", pd.Series("", index=runs.index)).fillna("").to_numpy(),
        "family": runs.get("tags.model_family", pd.Series("", index=runs.index)).fillna("").to_numpy(),
        "dataset": runs.get("tags.dataset", pd.Series("", index=runs.index)).fillna("").to_numpy(),
    })
    for name in dict.fromkeys((metric, *COLUMNS)):
        if f"metrics.{name}" in runs.columns:
            table[name] = runs[f"metrics.{name}"].to_numpy()
    table["started"] = pd.to_datetime(runs["start_time"]).dt.strftime("%Y-%m-%d %H:%M").to_numpy()
    table["run_id"] = runs["run_id"].str[:12].to_numpy()
    return table.head(limit) if limit else table


def format_table(table: pd.DataFrame) -> str:
    return table.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")

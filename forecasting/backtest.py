"""Rolling-origin backtests of any `Forecaster` over a `Panel`.

Window k of K hides each cluster's last `horizon + (K − 1 − k) · stride` observations: the
forecaster sees only what came before that origin (the hidden rows keep their known-future
covariates for the next `horizon` steps, nothing more) and forecasts the next `horizon` steps,
which are then scored. Origins are per cluster, counted back from each cluster's own last
observation, as in GluonTS's M4 test split (series end at different times).

`refit=True` fits afresh on each window's history; otherwise the forecaster is fitted once on the
history before the *earliest* origin, so no window is forecast by a model that saw its actuals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecasting.data import DEMAND, ID, Panel
from forecasting.forecast import Forecast, Forecaster
from forecasting.metrics import Scores, aggregate_scores, evaluate, mase_seasonality


@dataclass(frozen=True)
class BacktestConfig:
    horizon: int
    windows: int = 1
    stride: int | None = None  # steps between consecutive origins; default: the horizon (no overlap)
    num_samples: int = 100
    refit: bool = False
    seasonality: int | None = None  # MASE's period; default from the panel's frequency, as GluonTS

    def __post_init__(self) -> None:
        for name in ("horizon", "windows", "num_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"backtest {name} must be >= 1, got {getattr(self, name)}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"backtest stride must be >= 1, got {self.stride}")
        if self.seasonality is not None and self.seasonality < 1:
            raise ValueError(f"backtest seasonality must be >= 1, got {self.seasonality}")

    @property
    def step(self) -> int:
        return self.stride or self.horizon

    def hidden(self, window: int) -> int:
        """Observations hidden from the end of each cluster in window `window` (0 = earliest)."""
        return self.horizon + (self.windows - 1 - window) * self.step


@dataclass(frozen=True)
class WindowResult:
    index: int
    hidden: int  # observations hidden from each cluster's end
    forecast: Forecast
    actuals: np.ndarray  # [clusters, horizon]
    scores: Scores
    fit_seconds: float  # 0 when this window reused the model fitted before
    predict_seconds: float

    @property
    def origins(self) -> pd.DatetimeIndex:
        """Each cluster's first forecast step."""
        return self.forecast.starts


@dataclass(frozen=True)
class BacktestResult:
    config: BacktestConfig
    windows: list[WindowResult]
    aggregate: dict[str, float] = field(default_factory=dict)  # every window and cluster pooled

    def per_window(self) -> pd.DataFrame:
        """One row per window: its aggregate metrics and timings."""
        rows = [{"window": w.index, "hidden": w.hidden, "first_origin": w.origins.min(), **w.scores.aggregate,
                 "fit_seconds": w.fit_seconds, "predict_seconds": w.predict_seconds} for w in self.windows]
        return pd.DataFrame(rows).set_index("window")

    def per_cluster(self) -> pd.DataFrame:
        """One row per window and cluster: the cluster's own metrics (and the sums that pool)."""
        frames = [w.scores.per_item.rename_axis(ID).reset_index().assign(window=w.index, origin=w.origins)
                  for w in self.windows]
        return pd.concat(frames, ignore_index=True).set_index(["window", ID])

    def samples(self) -> tuple[np.ndarray, np.ndarray]:
        """All windows' samples `[windows · clusters, samples, horizon]` and actuals, stacked."""
        return (np.concatenate([w.forecast.samples for w in self.windows]),
                np.concatenate([w.actuals for w in self.windows]))


def backtest(
    forecaster: Forecaster,
    panel: Panel,
    config: BacktestConfig,
    *,
    on_window: Callable[[WindowResult], None] | None = None,
) -> BacktestResult:
    """Run the rolling-origin backtest; `on_window` is called as each window finishes (progress, logging)."""
    check_fits(panel, config)
    series = [g[DEMAND].to_numpy(dtype=float) for _, g in panel.history().groupby(ID, sort=False)]
    seasonality = config.seasonality or mase_seasonality(panel.freq)

    fit_seconds = 0.0
    if not config.refit:
        fit_seconds = _timed(forecaster.fit, visible(panel, config.hidden(0), config.horizon))
    results = []
    for k in range(config.windows):
        hidden = config.hidden(k)
        seen = visible(panel, hidden, config.horizon)
        if config.refit:
            fit_seconds = _timed(forecaster.fit, seen)
        started = time.perf_counter()
        forecast = _aligned(forecaster.predict(seen, config.horizon, config.num_samples), seen, config)
        predict_seconds = time.perf_counter() - started
        actuals = np.stack([s[len(s) - hidden:len(s) - hidden + config.horizon] for s in series])
        past = [s[:len(s) - hidden] for s in series]
        result = WindowResult(k, hidden, forecast, actuals, evaluate(forecast, actuals, past, seasonality=seasonality),
                              fit_seconds, predict_seconds)
        fit_seconds = 0.0
        results.append(result)
        if on_window is not None:
            on_window(result)
    pooled = aggregate_scores(pd.concat([w.scores.per_item for w in results]))
    return BacktestResult(config, results, pooled)


def check_fits(panel: Panel, config: BacktestConfig) -> None:
    """Raise unless every cluster keeps at least one observation before the earliest origin."""
    shortest = int(panel.lengths().min())
    if shortest <= config.hidden(0):
        raise ValueError(
            f"{panel.source}: the shortest cluster has {shortest} observations; {config.windows} window(s) of "
            f"horizon {config.horizon}, stride {config.step} need more than {config.hidden(0)}")


def visible(panel: Panel, hidden: int, horizon: int) -> Panel:
    """What a forecaster may see at an origin: the history before it, plus `horizon` future rows
    (demand empty) carrying known-future covariates."""
    seen = panel.cut(hidden).truncate_future(horizon)
    if not panel.past_covariates:
        return seen
    # `Panel.cut` empties only demand; past-only covariates (observed usage) are as unknown as demand.
    frame = seen.frame.copy()
    frame.loc[frame[DEMAND].isna(), list(panel.past_covariates)] = np.nan
    return seen.replace_frame(frame)


def _aligned(forecast: Forecast, seen: Panel, config: BacktestConfig) -> Forecast:
    """The forecast in the panel's cluster order, after checking it answers what was asked."""
    expected_starts = pd.DatetimeIndex(seen.last_observed().to_numpy()) + seen.step
    missing = sorted(set(seen.cluster_ids) - set(forecast.cluster_ids))
    if missing:
        raise ValueError(f"the forecaster returned no forecast for clusters {missing[:5]}")
    forecast = forecast.select(seen.cluster_ids)
    if forecast.horizon != config.horizon or forecast.num_samples != config.num_samples:
        raise ValueError(f"the forecaster returned {forecast.num_samples} samples × {forecast.horizon} steps; "
                         f"asked for {config.num_samples} × {config.horizon}")
    if not forecast.starts.equals(expected_starts):
        wrong = int(np.flatnonzero(forecast.starts != expected_starts)[0])
        raise ValueError(f"cluster {seen.cluster_ids[wrong]!r}: forecast starts at {forecast.starts[wrong]}, "
                         f"expected {expected_starts[wrong]} (one step after its last observation)")
    return forecast


def _timed(fit: Callable[[Panel], object], panel: Panel) -> float:
    started = time.perf_counter()
    fit(panel)
    return time.perf_counter() - started

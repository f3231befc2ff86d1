"""Forecasters the simulator can replay, by name, and the short-term analog forecaster.

`make_forecaster("deepar", options)` imports `forecasting.estimator` only when asked for (torch and
Lightning cost seconds to import; the other forecasters need neither).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from forecasting.data import DEMAND, ID, Panel
from forecasting.forecast import Forecast, Forecaster
from forecasting.seasonality import season_length


class AnalogBootstrap:
    """Sample paths from the past moments most like now (an analog ensemble), for short horizons.

    Work in log(1 + demand). The *level* at a step is the mean of the last `smooth` values; a past
    step τ is described by how its level changed over several look-backs (1, 2, 4, … up to `match`
    steps: short and longer trends) and by its phase in the season (time of day). The `neighbours`
    past steps τ of the last `window` closest to now are resampled, and each path is the current
    level plus what followed τ relative to τ's level: level_now + log(1 + y[τ+h]) − level_τ. Anchoring
    on levels rather than on the last value keeps one noisy minute from moving the whole forecast.
    Clusters that end at the same time share their τ draws, so paths keep the cross-cluster
    correlation of what happened then. No training; good at the minutes-to-hours leads a pool
    needs; it cannot foresee a spike nothing in the recent past hints at.
    """

    def __init__(self, window: int | None = None, match: int = 30, smooth: int = 3, neighbours: int = 60,
                 phase_weight: float = 1.0, period: int | None = None, seed: int = 0) -> None:
        if match < 1 or neighbours < 1 or smooth < 1:
            raise ValueError("match, smooth and neighbours must be >= 1")
        self.window, self.match, self.smooth, self.neighbours = window, match, smooth, neighbours
        self.phase_weight, self.period, self.seed = phase_weight, period, seed
        self.lags = np.unique(np.geomspace(1, match, num=max(1, int(np.log2(match)) + 1)).round().astype(int))
        self._calls = 0

    def fit(self, panel: Panel) -> None:
        return None

    def predict(self, panel: Panel, horizon: int, num_samples: int = 100) -> Forecast:
        period = self.period or season_length(panel.freq)
        window = self.window or 14 * period
        histories = _histories(panel)
        ends = panel.last_observed()
        rng = np.random.default_rng([self.seed, self._calls])
        self._calls += 1
        samples = np.empty((len(histories), num_samples, horizon))
        aligned = len(set(ends.to_numpy())) == 1 and len({len(h) for h in histories}) == 1
        groups = [list(range(len(histories)))] if aligned else [[c] for c in range(len(histories))]
        for group in groups:
            logs = np.log1p(np.maximum(np.stack([histories[c] for c in group]), 0.0))
            levels = self._levels(logs)
            picks = self._analogs(levels, horizon, window, period, num_samples, rng)
            for i, c in enumerate(group):
                if picks is None:  # too short to learn from: carry the last value forward
                    samples[c] = histories[c][-1]
                    continue
                growth = logs[i, picks[:, None] + np.arange(1, horizon + 1)] - levels[i, picks][:, None]
                samples[c] = np.expm1(levels[i, -1] + growth).clip(min=0.0)
        starts = pd.DatetimeIndex(ends.to_numpy()) + panel.step
        return Forecast(panel.cluster_ids, starts, panel.freq, samples)

    def _levels(self, logs: np.ndarray) -> np.ndarray:
        """Trailing mean of the last `smooth` values (fewer at the very start)."""
        sums = np.cumsum(logs, axis=1)
        k = self.smooth
        out = sums / np.arange(1, logs.shape[1] + 1)
        if logs.shape[1] > k:
            out[:, k:] = (sums[:, k:] - sums[:, :-k]) / k
        return out

    def _analogs(self, levels: np.ndarray, horizon: int, window: int, period: int, count: int,
                 rng: np.random.Generator) -> np.ndarray | None:
        """Indices τ of the chosen analogs (`[count]`), or None when history is too short."""
        n = levels.shape[1]
        reach = int(self.lags.max())
        first = max(reach, n - 1 - horizon - window)
        candidates = np.arange(first, n - horizon)
        if len(candidates) < 1:
            return None
        lags = self.lags
        now = levels[:, -1:] - levels[:, n - 1 - lags]  # [clusters, lags]
        past = levels[:, candidates, None] - levels[:, candidates[:, None] - lags[None, :]]  # [clusters, cand, lags]
        distance = ((past - now[:, None, :]) ** 2).mean(axis=(0, 2))
        phase = np.abs((candidates - (n - 1)) % period) / period
        distance = distance + self.phase_weight * np.minimum(phase, 1 - phase) ** 2
        k = min(self.neighbours, len(candidates))
        nearest = np.argpartition(distance, k - 1)[:k]
        return candidates[rng.choice(nearest, size=count, replace=True)]


def _histories(panel: Panel) -> list[np.ndarray]:
    """Observed demand per cluster, in the panel's cluster order (no group-by for one cluster: the
    simulator asks for a forecast every step, and grouping costs more than the forecast)."""
    history = panel.history()
    if len(panel.cluster_ids) == 1:
        return [history[DEMAND].to_numpy(dtype=float)]
    return [g[DEMAND].to_numpy(dtype=float) for _, g in history.groupby(ID, sort=False)]


def _seasonal_bootstrap(options: dict[str, Any]) -> Forecaster:
    from forecasting.baselines import SeasonalBootstrap

    return SeasonalBootstrap(**options)


def _seasonal_naive(options: dict[str, Any]) -> Forecaster:
    from forecasting.baselines import SeasonalNaive

    return SeasonalNaive(**options)


def _deepar(options: dict[str, Any]) -> Forecaster:
    from forecasting.estimator import DeepARForecaster  # torch + Lightning: only when asked for

    return DeepARForecaster(options)


FORECASTERS: dict[str, Callable[[dict[str, Any]], Forecaster]] = {
    "seasonal-bootstrap": _seasonal_bootstrap,
    "seasonal-naive": _seasonal_naive,
    "analog-bootstrap": lambda options: AnalogBootstrap(**options),
    "deepar": _deepar,
}


def make_forecaster(name: str, options: dict[str, Any] | None = None) -> Forecaster:
    if name not in FORECASTERS:
        raise ValueError(f"forecaster.name: unknown forecaster {name!r}; choose one of {sorted(FORECASTERS)}")
    try:
        return FORECASTERS[name](dict(options or {}))
    except TypeError as exc:  # an option the forecaster does not take
        raise ValueError(f"forecaster.options for {name!r}: {exc}") from None

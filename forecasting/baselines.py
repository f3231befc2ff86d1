"""Peers behind the `Forecaster` protocol: seasonal naive and its probabilistic cousin.

Both are cheap, need no training and are the yardstick every model must beat.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting.data import DEMAND, ID, Panel
from forecasting.forecast import Forecast
from forecasting.seasonality import season_length


def _histories(panel: Panel) -> list[np.ndarray]:
    return [g[DEMAND].to_numpy(dtype=float) for _, g in panel.history().groupby(ID, sort=False)]


def _starts(panel: Panel) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(panel.last_observed().to_numpy()) + panel.step


def _repeat_last_season(history: np.ndarray, period: int, horizon: int) -> np.ndarray:
    """Repeat the last `period` values over the horizon (the last value when history is shorter)."""
    if len(history) < period:
        return np.full(horizon, history[-1])
    last = history[-period:]
    return np.resize(last, horizon) if horizon > period else last[:horizon].copy()


class SeasonalNaive:
    """Each future step equals the value one season earlier. A point forecast: all paths coincide."""

    def __init__(self, period: int | None = None) -> None:
        self.period = period

    def fit(self, panel: Panel) -> None:  # nothing to learn
        return None

    def predict(self, panel: Panel, horizon: int, num_samples: int = 1) -> Forecast:
        period = self.period or season_length(panel.freq)
        points = np.stack([_repeat_last_season(h, period, horizon) for h in _histories(panel)])
        samples = np.repeat(points[:, None, :], num_samples, axis=1)
        return Forecast(panel.cluster_ids, _starts(panel), panel.freq, samples)


class SeasonalBootstrap:
    """Seasonal naive plus errors resampled from the history's own seasonal-naive errors.

    A sample path adds, to each step's seasonal-naive value, the error seen at one randomly chosen
    past time, scaled to that time's level; the same past times are used for every cluster in a
    path, so paths keep the cross-cluster correlation of the errors. Cheap and well calibrated on
    stationary traces; it cannot anticipate known-future events.
    """

    def __init__(self, period: int | None = None, window: int | None = None, seed: int = 0) -> None:
        self.period, self.window, self.seed = period, window, seed

    def fit(self, panel: Panel) -> None:
        return None

    def predict(self, panel: Panel, horizon: int, num_samples: int = 100) -> Forecast:
        period = self.period or season_length(panel.freq)
        histories = _histories(panel)
        points = np.stack([_repeat_last_season(h, period, horizon) for h in histories])
        # Relative errors of "same value one season ago, `lead` steps ahead", per cluster and time.
        span = min(len(h) for h in histories)
        window = min(self.window or 8 * period, span - period - 1)
        if window < 1:
            return SeasonalNaive(period).predict(panel, horizon, num_samples)
        rng = np.random.default_rng(self.seed)
        picks = rng.integers(0, window, size=(num_samples, horizon))
        samples = np.empty((len(histories), num_samples, horizon))
        for c, h in enumerate(histories):
            recent = h[-window:]
            earlier = h[-window - period:-period]
            ratio = (recent + 1e-9) / (earlier + 1e-9) if (h >= 0).all() else None
            if ratio is not None:
                samples[c] = points[c][None, :] * np.clip(ratio, 0.0, 50.0)[picks]
            else:  # quantities that can be negative: additive errors
                samples[c] = points[c][None, :] + (recent - earlier)[picks]
        return Forecast(panel.cluster_ids, _starts(panel), panel.freq, samples)

"""Accuracy of probabilistic forecasts: weighted quantile loss, coverage, ND.

Definitions follow GluonTS's evaluator so figures compare with published ones: losses are summed
over every cluster and step, then divided by the summed absolute demand ("weighted").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forecasting.forecast import Forecast

WQL_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def quantile_loss(actual: np.ndarray, predicted: np.ndarray, level: float) -> float:
    """2 × pinball loss summed over all entries (GluonTS's `QuantileLoss`)."""
    return float(2 * np.sum(np.abs((actual - predicted) * ((actual <= predicted) - level))))


def weighted_quantile_losses(
    forecast: Forecast, actuals: np.ndarray, levels: Sequence[float] = WQL_LEVELS
) -> dict[float, float]:
    """Per level: summed quantile loss ÷ summed |actual| over all clusters and steps."""
    actuals = _checked(forecast, actuals)
    scale = float(np.sum(np.abs(actuals)))
    quantiles = forecast.quantile(list(levels))
    return {float(q): quantile_loss(actuals, quantiles[i], q) / scale for i, q in enumerate(levels)}


def mean_weighted_quantile_loss(
    forecast: Forecast, actuals: np.ndarray, levels: Sequence[float] = WQL_LEVELS
) -> float:
    """Mean over levels of the weighted quantile loss (GluonTS's `mean_wQuantileLoss`)."""
    return float(np.mean(list(weighted_quantile_losses(forecast, actuals, levels).values())))


def interval_coverage(forecast: Forecast, actuals: np.ndarray, width: float = 0.9) -> float:
    """Share of actual values inside the central `width` interval (0.9 → between q0.05 and q0.95)."""
    actuals = _checked(forecast, actuals)
    low, high = forecast.quantile([(1 - width) / 2, (1 + width) / 2])
    return float(np.mean((actuals >= low) & (actuals <= high)))


def quantile_coverage(forecast: Forecast, actuals: np.ndarray, level: float) -> float:
    """Share of actual values below the `level` quantile (GluonTS's `Coverage[level]`); ideal = level."""
    actuals = _checked(forecast, actuals)
    return float(np.mean(actuals < forecast.quantile(level)))


def normalized_deviation(forecast: Forecast, actuals: np.ndarray) -> float:
    """ND: summed absolute error of the median ÷ summed |actual|."""
    actuals = _checked(forecast, actuals)
    return float(np.sum(np.abs(actuals - forecast.quantile(0.5))) / np.sum(np.abs(actuals)))


def _checked(forecast: Forecast, actuals: np.ndarray) -> np.ndarray:
    actuals = np.asarray(actuals, dtype=float)
    expected = (len(forecast.cluster_ids), forecast.horizon)
    if actuals.shape != expected:
        raise ValueError(f"actuals must have shape {expected} (clusters, horizon), got {actuals.shape}")
    if not np.isfinite(actuals).all():
        raise ValueError("actuals contain NaN or infinite values")
    return actuals

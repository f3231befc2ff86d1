"""Accuracy of probabilistic forecasts, with the definitions of GluonTS's `Evaluator`.

Figures here equal GluonTS's for the same sample forecasts (tests/test_metrics_vs_gluonts.py feeds
both the same samples), so they compare with published results. GluonTS itself is never imported:
it costs seconds, and training, the CLI and the serving path import this module.

Definitions (y: actual, ŷ_q: forecast quantile at level q, sums over every step of the items scored;
an *item* is one cluster in one forecast window):
- quantiles of a sample forecast are order statistics, `sorted(samples)[round((n - 1) · q)]`
  (GluonTS's `SampleForecast.quantile`, numpy's round-half-to-even), not interpolated;
- QuantileLoss[q] = 2 · Σ |(ŷ_q − y) · (1{y ≤ ŷ_q} − q)|; wQL[q] = Σ QuantileLoss[q] ÷ Σ |y|;
  `mean_wql` = mean of wQL over q = 0.1 … 0.9 (GluonTS's `mean_wQuantileLoss`). It is the usual
  "CRPS" of the DeepAR papers: CRPS = ∫ 2 · pinball_q dq over q ∈ (0, 1), approximated on 9 levels;
- `crps`: the exact CRPS of the samples' empirical distribution, in the energy form
  E|X − y| − ½ E|X − X′| (X, X′ independent draws from the samples), summed and divided by Σ |y|
  like wQL. Not a GluonTS `Evaluator` metric; it uses every sample, not 9 quantiles. On smooth
  forecasts `mean_wql` runs a few per cent above it (for a Gaussian, ~10 %: the 9-level grid gives
  the tails, where the loss is small, too little weight);
- ND = Σ |y − ŷ_0.5| ÷ Σ |y|;
- MASE per item = mean |y − ŷ_0.5| ÷ seasonal error, the seasonal error being
  mean |y_t − y_{t−m}| over the item's own in-sample history (m from GluonTS's seasonality table,
  `mase_seasonality`; 1 when the history is not longer than m); aggregate = mean over items;
- Coverage[q] = share of steps with y ≤ ŷ_q, averaged per item, then over items; ideal = q;
- `interval_coverage_90` = share of steps with ŷ_0.05 ≤ y ≤ ŷ_0.95; ideal = 0.9.
Weighted metrics pool numerators and denominators over all items (a busy cluster weighs more);
MASE and coverage average per-item values, skipping NaN and keeping inf (GluonTS's default
`aggregate_no_nan`). An item with no demand at all has NaN/inf weighted metrics of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.forecast import Forecast

WQL_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
COVERAGE_LEVELS: tuple[float, ...] = (0.5, 0.9, 0.99)
CALIBRATION_LEVELS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 … 0.95
INTERVAL_WIDTH = 0.9

# GluonTS's `DEFAULT_SEASONALITIES`, keyed by pandas offset name: the period of MASE's naive forecast.
_MASE_SEASONALITY = {"S": 3600, "s": 3600, "T": 1440, "min": 1440, "H": 24, "h": 24, "D": 1, "W": 1,
                     "M": 12, "ME": 12, "B": 5, "Q": 4, "QE": 4}

# Metrics where lower is better; coverage metrics are best at their nominal level instead.
LOSS_METRICS: tuple[str, ...] = ("mean_wql", "crps", "nd", "mase", *(f"wql_{q:g}" for q in WQL_LEVELS))


def coverage_name(level: float) -> str:
    return f"coverage_{level:g}"


def interval_name(width: float = INTERVAL_WIDTH) -> str:
    return f"interval_coverage_{round(width * 100):d}"


def nominal_level(metric: str) -> float | None:
    """The ideal value of a coverage metric (`coverage_0.9` → 0.9, `interval_coverage_90` → 0.9)."""
    if metric.startswith("interval_coverage_"):
        return int(metric.removeprefix("interval_coverage_")) / 100
    if metric.startswith("coverage_"):
        return float(metric.removeprefix("coverage_"))
    return None


@dataclass(frozen=True)
class Scores:
    """Metrics of a set of items: `per_item` (one row per item: the sums that pool, then its own
    metrics) and `aggregate` (all items pooled). Concatenate `per_item` frames of several windows
    and call `aggregate_scores` to pool them."""

    per_item: pd.DataFrame
    aggregate: dict[str, float]


def sample_quantiles(samples: np.ndarray, levels: float | Sequence[float]) -> np.ndarray:
    """GluonTS's quantile estimator for samples `[items, samples, horizon]`: the order statistic at
    index round((n − 1) · q). `[items, horizon]` for one level, `[levels, items, horizon]` for several."""
    samples = np.asarray(samples, dtype=float)
    qs = np.atleast_1d(np.asarray(levels, dtype=float))
    if ((qs < 0) | (qs > 1)).any():
        raise ValueError(f"quantile levels must lie in [0, 1], got {qs.tolist()}")
    index = np.round((samples.shape[1] - 1) * qs).astype(int)
    picked = np.moveaxis(np.sort(samples, axis=1)[:, index, :], 1, 0)
    return picked[0] if np.ndim(levels) == 0 else picked


def crps_samples(samples: np.ndarray, actuals: np.ndarray) -> np.ndarray:
    """`[items, horizon]` CRPS of each step's empirical sample distribution (energy form).

    ½ E|X − X′| over all n² ordered pairs is Σ_k x_(k) (2k − n + 1) ÷ n² on sorted samples, which
    avoids the n × n matrix."""
    samples = np.asarray(samples, dtype=float)
    n = samples.shape[1]
    spread = np.einsum("isk,s->ik", np.sort(samples, axis=1), 2 * np.arange(n) - n + 1) / n**2
    return np.abs(samples - actuals[:, None, :]).mean(axis=1) - spread


def mase_seasonality(freq: str) -> int:
    """MASE's seasonal period for a pandas frequency, as GluonTS's `get_seasonality` chooses it
    (hourly 24, 5-minutely 288, daily 1). It differs from `seasonality.season_length` on purpose:
    MASE figures must match GluonTS's."""
    offset = pd.tseries.frequencies.to_offset(freq)
    base = offset.name.split("-")[0]
    if len(base) >= 2 and base.endswith("S"):  # start-anchored ("MS") → the end-anchored key ("ME")
        base = base[:-1] + "E"
    period, remainder = divmod(_MASE_SEASONALITY.get(base, 1), offset.n)
    return period if remainder == 0 else 1


def seasonal_error(past: np.ndarray, seasonality: int) -> float:
    """mean |y_t − y_{t−m}| over the history (m = 1 when the history is not longer than m)."""
    past = np.asarray(past, dtype=float)
    m = seasonality if seasonality < len(past) else 1
    if len(past) <= m:
        return float("nan")
    return float(np.mean(np.abs(past[m:] - past[:-m])))


def score(
    samples: np.ndarray,
    actuals: np.ndarray,
    past: Sequence[np.ndarray] | None = None,
    *,
    seasonality: int = 1,
    item_ids: Sequence[str] | None = None,
    levels: Sequence[float] = WQL_LEVELS,
    coverage_levels: Sequence[float] = COVERAGE_LEVELS,
) -> Scores:
    """Score sample forecasts `[items, samples, horizon]` against `actuals` `[items, horizon]`.

    `past[i]` is item i's in-sample history (for MASE; NaN without it)."""
    samples, actuals = _checked_arrays(samples, actuals)
    items, _, horizon = samples.shape
    if past is not None and len(past) != items:
        raise ValueError(f"past has {len(past)} histories for {items} items")
    low_level, high_level = _interval_levels(INTERVAL_WIDTH)
    all_levels = sorted({*levels, *coverage_levels, 0.5, low_level, high_level})
    quantiles = dict(zip(all_levels, sample_quantiles(samples, all_levels), strict=True))
    median = quantiles[0.5]

    sums: dict[str, np.ndarray] = {
        "abs_target_sum": np.abs(actuals).sum(axis=1),
        "abs_error": np.abs(actuals - median).sum(axis=1),
        "crps_sum": crps_samples(samples, actuals).sum(axis=1),
        "seasonal_error": np.array([seasonal_error(p, seasonality) for p in past] if past is not None
                                   else np.full(items, np.nan)),
    }
    for q in levels:
        sums[_ql_name(q)] = _quantile_loss(actuals, quantiles[q], q).sum(axis=1)
    own: dict[str, np.ndarray] = {}
    for q in coverage_levels:
        own[coverage_name(q)] = (actuals <= quantiles[q]).mean(axis=1)
    low, high = quantiles[low_level], quantiles[high_level]
    own[interval_name()] = ((actuals >= low) & (actuals <= high)).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        own["mase"] = sums["abs_error"] / horizon / sums["seasonal_error"]

    index = pd.Index(list(item_ids) if item_ids is not None else range(items), name="item")
    if len(index) != items:
        raise ValueError(f"{len(index)} item ids for {items} items")
    per_item = pd.DataFrame({**sums, **own}, index=index)
    per_item = pd.concat([per_item, _weighted(per_item, levels)], axis=1)
    return Scores(per_item, aggregate_scores(per_item, levels, coverage_levels))


def aggregate_scores(
    per_item: pd.DataFrame, levels: Sequence[float] = WQL_LEVELS, coverage_levels: Sequence[float] = COVERAGE_LEVELS,
) -> dict[str, float]:
    """Pool per-item rows (of one window or several) into the aggregate metrics."""
    totals = per_item[["abs_target_sum", "abs_error", "crps_sum", *(_ql_name(q) for q in levels)]].sum()
    weighted = _weighted(totals.to_frame().T, levels).iloc[0]
    averaged = [coverage_name(q) for q in coverage_levels] + [interval_name(), "mase"]
    means = per_item[averaged].mean(skipna=True)  # NaN skipped, inf kept: GluonTS's aggregate_no_nan
    return {**{k: float(v) for k, v in weighted.items()}, **{k: float(v) for k, v in means.items()},
            "num_items": float(len(per_item))}


def evaluate(
    forecast: Forecast,
    actuals: np.ndarray,
    past: Sequence[np.ndarray] | None = None,
    *,
    seasonality: int | None = None,
    levels: Sequence[float] = WQL_LEVELS,
    coverage_levels: Sequence[float] = COVERAGE_LEVELS,
) -> Scores:
    """`score` for a `Forecast`: items are its clusters; MASE's period defaults from its frequency."""
    period = seasonality if seasonality is not None else mase_seasonality(forecast.freq)
    return score(forecast.samples, actuals, past, seasonality=period, item_ids=forecast.cluster_ids,
                 levels=levels, coverage_levels=coverage_levels)


def calibration(samples: np.ndarray, actuals: np.ndarray, levels: Sequence[float] = CALIBRATION_LEVELS) -> pd.DataFrame:
    """Nominal vs observed coverage per level: `quantile` = share of y ≤ ŷ_level, `interval` = share
    inside the central interval of width `level`. A calibrated forecast lies on the diagonal."""
    samples, actuals = _checked_arrays(samples, actuals)
    levels = list(levels)
    below = sample_quantiles(samples, levels)
    lows = sample_quantiles(samples, [_interval_levels(w)[0] for w in levels])
    highs = sample_quantiles(samples, [_interval_levels(w)[1] for w in levels])
    return pd.DataFrame({
        "level": levels,
        "quantile": [(actuals <= q).mean() for q in below],
        "interval": [((actuals >= lo) & (actuals <= hi)).mean() for lo, hi in zip(lows, highs, strict=True)],
    })


# --- Single-number helpers over a `Forecast` (used by the training job and the demo) -------------

def quantile_loss(actual: np.ndarray, predicted: np.ndarray, level: float) -> float:
    """2 × pinball loss summed over all entries (GluonTS's `QuantileLoss`)."""
    return float(_quantile_loss(np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float), level).sum())


def weighted_quantile_losses(
    forecast: Forecast, actuals: np.ndarray, levels: Sequence[float] = WQL_LEVELS
) -> dict[float, float]:
    """Per level: summed quantile loss ÷ summed |actual| over all clusters and steps."""
    actuals = _checked(forecast, actuals)
    scale = float(np.sum(np.abs(actuals)))
    quantiles = sample_quantiles(forecast.samples, list(levels))
    return {float(q): quantile_loss(actuals, quantiles[i], q) / scale for i, q in enumerate(levels)}


def mean_weighted_quantile_loss(
    forecast: Forecast, actuals: np.ndarray, levels: Sequence[float] = WQL_LEVELS
) -> float:
    """Mean over levels of the weighted quantile loss (GluonTS's `mean_wQuantileLoss`)."""
    return float(np.mean(list(weighted_quantile_losses(forecast, actuals, levels).values())))


def interval_coverage(forecast: Forecast, actuals: np.ndarray, width: float = INTERVAL_WIDTH) -> float:
    """Share of actual values inside the central `width` interval (0.9 → between q0.05 and q0.95)."""
    actuals = _checked(forecast, actuals)
    low, high = sample_quantiles(forecast.samples, list(_interval_levels(width)))
    return float(np.mean((actuals >= low) & (actuals <= high)))


def quantile_coverage(forecast: Forecast, actuals: np.ndarray, level: float) -> float:
    """Share of actual values at or below the `level` quantile (GluonTS's `Coverage[level]`); ideal = level."""
    actuals = _checked(forecast, actuals)
    return float(np.mean(actuals <= sample_quantiles(forecast.samples, level)))


def normalized_deviation(forecast: Forecast, actuals: np.ndarray) -> float:
    """ND: summed absolute error of the median ÷ summed |actual|."""
    actuals = _checked(forecast, actuals)
    return float(np.sum(np.abs(actuals - sample_quantiles(forecast.samples, 0.5))) / np.sum(np.abs(actuals)))


def _quantile_loss(actual: np.ndarray, predicted: np.ndarray, level: float) -> np.ndarray:
    return 2 * np.abs((predicted - actual) * ((actual <= predicted) - level))


def _interval_levels(width: float) -> tuple[float, float]:
    """The central interval's quantile levels, rounded: (1 − 0.9) / 2 is 0.04999… in floating point,
    which can pick a different order statistic than GluonTS's 0.05."""
    return round((1 - width) / 2, 12), round((1 + width) / 2, 12)


def _ql_name(level: float) -> str:
    return f"ql_{level:g}"


def _weighted(sums: pd.DataFrame, levels: Sequence[float]) -> pd.DataFrame:
    """wQL per level, their mean, CRPS and ND from summed losses (rows: items or one pooled row)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = sums["abs_target_sum"].to_numpy()
        out = {f"wql_{q:g}": sums[_ql_name(q)].to_numpy() / scale for q in levels}
        out = {"mean_wql": np.mean(np.stack(list(out.values())), axis=0), **out,
               "crps": sums["crps_sum"].to_numpy() / scale, "nd": sums["abs_error"].to_numpy() / scale}
    return pd.DataFrame(out, index=sums.index)


def _checked_arrays(samples: np.ndarray, actuals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    samples = np.asarray(samples, dtype=float)
    actuals = np.asarray(actuals, dtype=float)
    if samples.ndim != 3 or samples.shape[1] < 1:
        raise ValueError(f"samples must be [items, samples, horizon] with at least one sample, got {samples.shape}")
    expected = (samples.shape[0], samples.shape[2])
    if actuals.shape != expected:
        raise ValueError(f"actuals must have shape {expected} (items, horizon), got {actuals.shape}")
    if not np.isfinite(actuals).all():
        raise ValueError("actuals contain NaN or infinite values")
    if not np.isfinite(samples).all():
        raise ValueError("forecast samples contain NaN or infinite values")
    return samples, actuals


def _checked(forecast: Forecast, actuals: np.ndarray) -> np.ndarray:
    return _checked_arrays(forecast.samples, actuals)[1]

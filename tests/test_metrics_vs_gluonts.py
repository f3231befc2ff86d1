"""Golden figures: the same sample forecasts scored by GluonTS's `Evaluator` and by ours agree.

GluonTS is imported only here (it costs seconds); `forecasting.metrics` re-implements its
definitions without it.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from forecasting.backtest import BacktestConfig, backtest
from forecasting.baselines import SeasonalBootstrap
from forecasting.data import DEMAND, ID, TIME
from forecasting.metrics import WQL_LEVELS, mase_seasonality, score
from forecasting.synthetic import SyntheticSpec, generate_panel

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # its import warns about a missing optional JSON library
    from gluonts.evaluation import Evaluator
    from gluonts.model.forecast import SampleForecast
    from gluonts.time_feature import get_seasonality

COVERAGE = (0.05, 0.5, 0.9, 0.95, 0.99)
RTOL = 1e-10


def gluonts_scores(series: list[pd.Series], forecasts: list[SampleForecast], quantiles) -> tuple[dict, pd.DataFrame]:
    evaluator = Evaluator(quantiles=quantiles, num_workers=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluator(iter(series), iter(forecasts), num_series=len(series))


def gluonts_inputs(samples, actuals, pasts, freq="h"):
    """Full series (history + actuals) on a PeriodIndex, each starting at a different hour, and
    the SampleForecasts starting right after each history."""
    series, forecasts = [], []
    for i, (past, actual) in enumerate(zip(pasts, actuals, strict=True)):
        values = np.concatenate([past, actual])
        index = pd.period_range(pd.Period("2024-01-01 00:00", freq=freq) + 7 * i, periods=len(values), freq=freq)
        series.append(pd.Series(values, index=index))
        forecasts.append(SampleForecast(samples=samples[i], start_date=index[len(past)], item_id=f"s{i}"))
    return series, forecasts


def random_case(seed: int, num_samples: int, integer: bool):
    """Items with different history lengths; Poisson counts make ties between y and ŷ_q common,
    which is where `≤` vs `<` and the quantile estimator show."""
    rng = np.random.default_rng(seed)
    items, horizon = 9, 24
    level = rng.uniform(5, 200, size=items)
    draw = (lambda mean, size: rng.poisson(mean, size=size).astype(float)) if integer else \
        (lambda mean, size: rng.gamma(4.0, mean / 4.0, size=size))
    samples = np.stack([draw(level[i], (num_samples, horizon)) for i in range(items)])
    actuals = np.stack([draw(level[i], horizon) for i in range(items)])
    pasts = [draw(level[i], int(rng.integers(10, 200))) for i in range(items)]
    pasts[0] = pasts[0][:12]  # shorter than a season: both fall back to m = 1
    return samples, actuals, pasts


@pytest.mark.parametrize(("seed", "num_samples", "integer"), [(0, 100, True), (1, 37, True), (2, 200, False),
                                                               (3, 1, False)])
def test_aggregate_and_per_series_metrics_equal_gluonts(seed, num_samples, integer):
    samples, actuals, pasts = random_case(seed, num_samples, integer)
    series, forecasts = gluonts_inputs(samples, actuals, pasts)
    ours = score(samples, actuals, pasts, seasonality=mase_seasonality("h"), coverage_levels=COVERAGE)

    theirs, per_ts = gluonts_scores(series, forecasts, WQL_LEVELS)
    agg = ours.aggregate
    assert agg["mean_wql"] == pytest.approx(theirs["mean_wQuantileLoss"], rel=RTOL)
    for q in WQL_LEVELS:
        assert agg[f"wql_{q:g}"] == pytest.approx(theirs[f"wQuantileLoss[{q}]"], rel=RTOL)
    assert agg["nd"] == pytest.approx(theirs["ND"], rel=RTOL)
    assert agg["mase"] == pytest.approx(theirs["MASE"], rel=RTOL)

    per_item = ours.per_item
    np.testing.assert_allclose(per_item["seasonal_error"], per_ts["seasonal_error"], rtol=RTOL)
    np.testing.assert_allclose(per_item["mase"], per_ts["MASE"], rtol=RTOL)
    np.testing.assert_allclose(per_item["nd"], per_ts["ND"], rtol=RTOL)
    np.testing.assert_allclose(per_item["abs_target_sum"], per_ts["abs_target_sum"], rtol=RTOL)
    for q in WQL_LEVELS:
        np.testing.assert_allclose(per_item[f"wql_{q:g}"], per_ts[f"QuantileLoss[{q}]"] / per_ts["abs_target_sum"],
                                   rtol=RTOL)

    theirs, per_ts = gluonts_scores(series, forecasts, COVERAGE)
    for q in COVERAGE:
        assert agg[f"coverage_{q:g}"] == pytest.approx(theirs[f"Coverage[{q}]"], rel=RTOL)
        np.testing.assert_allclose(per_item[f"coverage_{q:g}"], per_ts[f"Coverage[{q}]"], rtol=RTOL)
    if not integer:  # no ties: inside [q0.05, q0.95] is "≤ q0.95" minus "≤ q0.05"
        assert agg["interval_coverage_90"] == pytest.approx(theirs["Coverage[0.95]"] - theirs["Coverage[0.05]"],
                                                            rel=RTOL)


def test_mase_period_matches_gluonts_seasonality():
    for freq in ("h", "2h", "5min", "15min", "30min", "7min", "min", "s", "D", "W-SUN", "MS", "ME", "QE", "B"):
        assert mase_seasonality(freq) == get_seasonality(freq), freq


def test_pooled_backtest_metrics_equal_gluonts_on_the_same_windows():
    """GluonTS cuts the actuals and the in-sample history out of each full series by the forecast's
    timestamps; equal figures mean the backtest's windows hold the right actuals and history."""
    panel = generate_panel(SyntheticSpec(num_clusters=5, days=12, seed=3))
    # clusters of different lengths, so origins differ between clusters
    frame = panel.frame[~((panel.frame[ID] == "cluster-001") & (panel.frame.groupby(ID).cumcount() < 30))]
    panel = panel.replace_frame(frame.reset_index(drop=True))
    result = backtest(SeasonalBootstrap(), panel, BacktestConfig(horizon=12, windows=3, stride=7, num_samples=50))

    full = {c: g.set_index(TIME)[DEMAND] for c, g in panel.history().groupby(ID, sort=False)}
    series, forecasts = [], []
    for window in result.windows:
        for c, cluster in enumerate(window.forecast.cluster_ids):
            values = full[cluster]
            series.append(pd.Series(values.to_numpy(), index=values.index.to_period("h")))
            forecasts.append(SampleForecast(samples=window.forecast.samples[c],
                                            start_date=pd.Period(window.forecast.starts[c], freq="h"),
                                            item_id=cluster))
    theirs, _ = gluonts_scores(series, forecasts, WQL_LEVELS)
    assert result.aggregate["mean_wql"] == pytest.approx(theirs["mean_wQuantileLoss"], rel=RTOL)
    assert result.aggregate["nd"] == pytest.approx(theirs["ND"], rel=RTOL)
    assert result.aggregate["mase"] == pytest.approx(theirs["MASE"], rel=RTOL)
    theirs, _ = gluonts_scores(series, forecasts, (0.5, 0.9))
    assert result.aggregate["coverage_0.9"] == pytest.approx(theirs["Coverage[0.9]"], rel=RTOL)

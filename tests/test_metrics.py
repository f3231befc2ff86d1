"""Known answers for the forecast metrics: hand-sized cases, a Gaussian's quantiles and CRPS."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from forecasting.forecast import Forecast
from forecasting.metrics import (
    WQL_LEVELS,
    aggregate_scores,
    calibration,
    crps_samples,
    evaluate,
    interval_coverage,
    mase_seasonality,
    mean_weighted_quantile_loss,
    nominal_level,
    normalized_deviation,
    quantile_coverage,
    sample_quantiles,
    score,
    seasonal_error,
)


def forecast_of(samples: np.ndarray, freq: str = "h") -> Forecast:
    return Forecast.aligned([f"c{i}" for i in range(len(samples))], pd.Timestamp("2024-01-01"), freq, samples)


def test_sample_quantiles_are_gluonts_order_statistics():
    samples = np.random.default_rng(0).permutation(np.arange(10.0))[None, :, None]  # 0 … 9, shuffled
    # index round((n − 1) q), numpy rounding half to even: 0.1 → 0.9 → 1; 0.5 → 4.5 → 4; 0.95 → 8.55 → 9
    assert sample_quantiles(samples, [0.1, 0.5, 0.95])[:, 0, 0].tolist() == [1.0, 4.0, 9.0]
    assert sample_quantiles(samples, 0.5).shape == (1, 1)
    with pytest.raises(ValueError, match="levels must lie in"):
        sample_quantiles(samples, 1.5)


def test_quantiles_of_gaussian_samples_match_the_distribution():
    rng = np.random.default_rng(1)
    samples = rng.normal(50.0, 4.0, size=(3, 20_000, 2))
    levels = [0.05, 0.1, 0.5, 0.9, 0.99]
    got = sample_quantiles(samples, levels)
    np.testing.assert_allclose(got, norm.ppf(levels, 50.0, 4.0)[:, None, None] * np.ones((1, 3, 2)), atol=0.15)


def test_a_perfect_forecast_scores_zero():
    rng = np.random.default_rng(2)
    actuals = rng.uniform(5, 50, size=(4, 6))
    past = [rng.uniform(5, 50, size=60) for _ in range(4)]
    samples = np.repeat(actuals[:, None, :], 20, axis=1)
    result = score(samples, actuals, past, seasonality=24).aggregate
    for name in ("mean_wql", "crps", "nd", "mase", *(f"wql_{q:g}" for q in WQL_LEVELS)):
        assert result[name] == pytest.approx(0.0, abs=1e-12), name
    # y ≤ ŷ_q holds with equality everywhere: full coverage at every level
    assert result["coverage_0.5"] == result["coverage_0.99"] == result["interval_coverage_90"] == 1.0


def test_hand_computed_point_forecast():
    # one item, point forecast 10, actuals 8 and 12: each step's pinball sum is 2 (1 − q) + 2 q = 2
    samples = np.full((1, 5, 2), 10.0)
    actuals = np.array([[8.0, 12.0]])
    result = score(samples, actuals, [np.array([1.0, 2.0, 3.0, 4.0])], seasonality=1).aggregate
    for q in WQL_LEVELS:
        assert result[f"wql_{q:g}"] == pytest.approx(4 / 20)  # 2 · Σ pinball = 4, Σ |y| = 20
    assert result["mean_wql"] == pytest.approx(0.2)
    assert result["nd"] == pytest.approx(0.2)
    assert result["crps"] == pytest.approx(0.2)  # one point: CRPS = |x − y|, the same as ND
    assert result["mase"] == pytest.approx(2.0)  # mean |error| 2 ÷ seasonal error 1
    assert result["coverage_0.5"] == 0.5  # 8 ≤ 10, 12 > 10


def test_crps_energy_form_equals_the_pairwise_definition():
    rng = np.random.default_rng(3)
    samples = rng.gamma(2.0, 5.0, size=(3, 40, 5))
    actuals = rng.gamma(2.0, 5.0, size=(3, 5))
    pairwise = np.abs(samples[:, :, None, :] - samples[:, None, :, :]).mean(axis=(1, 2))
    expected = np.abs(samples - actuals[:, None, :]).mean(axis=1) - 0.5 * pairwise
    np.testing.assert_allclose(crps_samples(samples, actuals), expected, rtol=1e-12)


def test_crps_of_gaussian_samples_matches_the_closed_form_and_wql_approximates_it():
    rng = np.random.default_rng(4)
    mu, sigma = 100.0, 10.0
    actuals = rng.normal(mu, sigma, size=(50, 24))
    samples = rng.normal(mu, sigma, size=(50, 2000, 24))
    z = (actuals - mu) / sigma
    exact = sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))
    assert crps_samples(samples, actuals).mean() == pytest.approx(exact.mean(), rel=0.01)
    result = score(samples, actuals).aggregate
    # the 9-level wQL grid over-weights the tails a little: within ~10 % of the exact CRPS here
    assert result["crps"] < result["mean_wql"] < 1.15 * result["crps"]


def test_weighted_metrics_pool_sums_and_coverage_and_mase_average_items():
    samples = np.stack([np.full((3, 2), 10.0), np.full((3, 2), 1000.0)])  # two items, point forecasts
    actuals = np.array([[20.0, 20.0], [1000.0, 1100.0]])
    past = [np.array([0.0, 1.0, 2.0]), np.array([0.0, 50.0, 100.0])]
    scores = score(samples, actuals, past, seasonality=1, item_ids=["small", "big"])
    per_item = scores.per_item
    assert per_item.loc["small", "nd"] == pytest.approx(0.5)
    assert per_item.loc["big", "nd"] == pytest.approx(100 / 2100)
    assert scores.aggregate["nd"] == pytest.approx((20 + 100) / (40 + 2100))  # not the mean of 0.5 and 0.048
    assert per_item.loc["small", "mase"] == pytest.approx(10.0)  # |error| 10 ÷ seasonal error 1
    assert per_item.loc["big", "mase"] == pytest.approx(50 / 50)
    assert scores.aggregate["mase"] == pytest.approx(5.5)
    assert scores.aggregate["coverage_0.5"] == pytest.approx((0.0 + 0.5) / 2)  # 20 > 10; 1000 ≤ 1000 < 1100
    # pooling two windows' rows equals scoring them together
    again = aggregate_scores(pd.concat([per_item, per_item]))
    assert again["nd"] == pytest.approx(scores.aggregate["nd"]) and again["num_items"] == 4


def test_items_without_demand_or_history_do_not_poison_the_aggregate():
    samples = np.ones((2, 4, 3))
    actuals = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    scores = score(samples, actuals, [np.array([5.0]), np.array([1.0, 2.0, 4.0])], seasonality=1)
    assert np.isinf(scores.per_item["nd"].iloc[0])  # error 3 ÷ no demand, as in GluonTS
    assert np.isnan(scores.per_item["mase"].iloc[0])  # one past value: no seasonal error
    assert scores.aggregate["nd"] == pytest.approx((3 + 0 + 1 + 2) / 6)
    assert scores.aggregate["mase"] == pytest.approx(scores.per_item["mase"].iloc[1])


def test_seasonal_error_and_the_mase_period():
    assert seasonal_error(np.array([1.0, 5.0, 2.0, 6.0, 3.0]), 2) == pytest.approx(1.0)
    assert seasonal_error(np.array([1.0, 4.0, 2.0]), 24) == pytest.approx(2.5)  # shorter than a season: m = 1
    assert [mase_seasonality(f) for f in ("h", "2h", "5min", "30min", "7min", "D", "W-SUN", "MS")] == \
        [24, 12, 288, 48, 1, 1, 1, 12]


def test_forecast_helpers_agree_with_score():
    rng = np.random.default_rng(5)
    samples = rng.poisson(30, size=(5, 99, 8)).astype(float)
    actuals = rng.poisson(30, size=(5, 8)).astype(float)
    forecast = forecast_of(samples)
    aggregate = evaluate(forecast, actuals).aggregate
    assert mean_weighted_quantile_loss(forecast, actuals) == pytest.approx(aggregate["mean_wql"], rel=1e-12)
    assert normalized_deviation(forecast, actuals) == pytest.approx(aggregate["nd"], rel=1e-12)
    assert quantile_coverage(forecast, actuals, 0.9) == pytest.approx(aggregate["coverage_0.9"])
    assert interval_coverage(forecast, actuals) == pytest.approx(aggregate["interval_coverage_90"])
    assert list(evaluate(forecast, actuals).per_item.index) == forecast.cluster_ids


def test_calibration_curve_finds_an_over_confident_forecast():
    rng = np.random.default_rng(6)
    actuals = rng.normal(0, 1, size=(100, 20)) + 100
    honest = calibration(rng.normal(100, 1, size=(100, 400, 20)), actuals)
    narrow = calibration(rng.normal(100, 0.3, size=(100, 400, 20)), actuals)
    assert list(honest["level"]) == pytest.approx([0.05 * i for i in range(1, 20)])
    np.testing.assert_allclose(honest["quantile"], honest["level"], atol=0.03)
    np.testing.assert_allclose(honest["interval"], honest["level"], atol=0.03)
    assert (narrow["interval"] < narrow["level"] - 0.1).iloc[5:].all()  # bands too tight: too little covered


def test_bad_inputs_are_rejected_with_the_reason():
    samples = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"actuals must have shape \(2, 4\)"):
        score(samples, np.ones((2, 5)))
    with pytest.raises(ValueError, match="actuals contain NaN"):
        score(samples, np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="samples contain NaN"):
        score(np.full((2, 3, 4), np.inf), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"samples must be \[items, samples, horizon\]"):
        score(np.ones((2, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="past has 1 histories for 2 items"):
        score(samples, np.ones((2, 4)), [np.ones(5)])


def test_nominal_levels_of_coverage_metrics():
    assert nominal_level("coverage_0.99") == 0.99
    assert nominal_level("interval_coverage_90") == 0.9
    assert nominal_level("mean_wql") is None


def test_metrics_module_does_not_import_gluonts_or_torch():
    code = "import sys, forecasting.metrics; print([m for m in ('gluonts', 'torch', 'lightning') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

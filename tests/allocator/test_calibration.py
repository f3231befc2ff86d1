"""Adaptive conformal correction: a mis-calibrated forecaster is corrected within a stated number of steps."""

import numpy as np
import pytest
from scipy.stats import norm

from allocator.calibration import AdaptiveLevel, CalibrationSettings, depth, level_of, steps_to_reach
from allocator.policy import quantile_of_sorted

FORECAST = np.sort(np.random.default_rng(0).normal(0.0, 1.0, size=2000))  # the forecaster says N(0, 1)
CORRECTION_STEPS = 250  # stated: within this many steps the level is within 0.5 tail depth of the ideal


def run(truth_scale: float, steps: int, target: float = 0.9, settings=CalibrationSettings(step_size=0.5), seed=1):
    rng = np.random.default_rng(seed)
    tracker = AdaptiveLevel(target, settings)
    levels, misses = [], []
    for y in rng.normal(0.0, truth_scale, size=steps):
        threshold = quantile_of_sorted(FORECAST, tracker.level)
        miss = y > threshold
        tracker.update(miss)
        levels.append(float(tracker.level))
        misses.append(bool(miss))
    return np.array(levels), np.array(misses)


def test_over_confident_forecaster_is_corrected_within_the_stated_steps():
    # Truth is twice as wide as the forecast: the forecast's 0.9 quantile is exceeded 26 % of the time.
    assert 1 - norm.cdf(norm.ppf(0.9) / 2) == pytest.approx(0.2606, abs=1e-3)
    needed = norm.cdf(2 * norm.ppf(0.9))  # the forecast level whose quantile is the truth's 0.9: 0.9949
    levels, misses = run(truth_scale=2.0, steps=CORRECTION_STEPS + 3000)
    assert np.abs(depth(levels[CORRECTION_STEPS:]).mean() - depth(needed)) < 0.5
    after = misses[CORRECTION_STEPS:].mean()
    assert after == pytest.approx(0.1, abs=0.02)
    uncorrected = run(2.0, 3000, settings=CalibrationSettings(step_size=1e-9))[1].mean()
    assert uncorrected == pytest.approx(0.26, abs=0.03)


def test_under_confident_forecaster_shrinks_the_level():
    levels, misses = run(truth_scale=0.5, steps=3000)
    assert levels[-500:].mean() < 0.8  # the pool gets smaller: the forecast's 0.9 quantile was too wide
    assert misses[CORRECTION_STEPS:].mean() == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("seed", range(6))
def test_the_level_reaches_the_ideal_within_the_stated_steps(seed):
    needed = depth(norm.cdf(2 * norm.ppf(0.9)))  # 5.26, from 2.30
    levels, _ = run(truth_scale=2.0, steps=CORRECTION_STEPS, seed=seed)
    reached = np.flatnonzero(depth(levels) >= needed - 0.5)
    assert reached.size and steps_to_reach(0.9, 0.99, 0.9, 0.5) <= reached[0] < CORRECTION_STEPS


def test_levels_stay_within_bounds_and_the_miss_rate_bound_holds():
    settings = CalibrationSettings(step_size=0.5, lower=0.6, upper=0.999)
    tracker = AdaptiveLevel(np.array([0.9, 0.99]), settings)
    rng = np.random.default_rng(3)
    misses = rng.random((4000, 2)) < np.array([0.9, 0.0])  # always wrong one way, then the other
    for m in misses:
        tracker.update(m)
        assert (tracker.level >= 0.6 - 1e-12).all() and (tracker.level <= 0.999 + 1e-12).all()
    assert tracker.level[0] == pytest.approx(0.999)  # pinned at the upper bound
    assert tracker.level[1] == pytest.approx(0.6)  # and at the lower one
    assert tracker.miss_rate_bound(4000) == pytest.approx(
        (depth(0.999) - depth(0.6) + 0.5) / (0.5 * 4000))


def test_unobserved_outcomes_do_not_move_the_level():
    tracker = AdaptiveLevel(0.95)
    tracker.update(np.array(True), observed=False)
    assert tracker.level == pytest.approx(0.95)


def test_depth_round_trip_and_settings_validation():
    assert level_of(depth(0.9999)) == pytest.approx(0.9999)
    with pytest.raises(ValueError, match="step_size"):
        CalibrationSettings(step_size=0.0)
    with pytest.raises(ValueError, match="bounds"):
        CalibrationSettings(lower=0.9, upper=0.8)

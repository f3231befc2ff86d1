"""Rolling-origin backtests: window geometry, no look-ahead, refit vs fit-once, scoring alignment."""

import numpy as np
import pandas as pd
import pytest

from forecasting.backtest import BacktestConfig, backtest, visible
from forecasting.baselines import SeasonalNaive
from forecasting.data import DEMAND, ID, TIME, Panel
from forecasting.forecast import Forecast
from forecasting.metrics import aggregate_scores
from forecasting.synthetic import SyntheticSpec, generate_panel


@pytest.fixture(scope="module")
def panel() -> Panel:
    """Four clusters with covariates; cluster-002 starts later and ends earlier than the others."""
    full = generate_panel(SyntheticSpec(num_clusters=4, days=10, seed=7))
    frame = full.frame
    position = frame.groupby(ID).cumcount()
    remaining = frame.groupby(ID).cumcount(ascending=False)
    short = (frame[ID] == "cluster-002") & ((position < 20) | (remaining < 5))
    return full.replace_frame(frame[~short].reset_index(drop=True))


def starts_of(panel: Panel) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(panel.last_observed().to_numpy()) + panel.step


class Spy:
    """Forecasts the mean of everything it is shown, demand and covariates, future rows included:
    any value leaking from after an origin changes its forecasts."""

    def __init__(self) -> None:
        self.fitted: list[Panel] = []
        self.asked: list[Panel] = []

    def fit(self, panel: Panel) -> None:
        self.fitted.append(panel)

    def predict(self, panel: Panel, horizon: int, num_samples: int) -> Forecast:
        self.asked.append(panel)
        seen = panel.frame[[DEMAND, *panel.covariates]].to_numpy(dtype=float)
        level = np.nanmean(seen) + np.nansum(seen) * 1e-9
        samples = np.full((len(panel.cluster_ids), num_samples, horizon), level)
        return Forecast(panel.cluster_ids, starts_of(panel), panel.freq, samples)


class Oracle:
    """Cheats on purpose: returns the true future, read from the full panel it was built with."""

    def __init__(self, full: Panel) -> None:
        self.full = full.history().set_index([ID, TIME])[DEMAND]

    def fit(self, panel: Panel) -> None:
        return None

    def predict(self, panel: Panel, horizon: int, num_samples: int) -> Forecast:
        starts = starts_of(panel)
        rows = [self.full.loc[c].loc[pd.date_range(s, periods=horizon, freq=panel.freq)].to_numpy()
                for c, s in zip(panel.cluster_ids, starts, strict=True)]
        samples = np.repeat(np.stack(rows)[:, None, :], num_samples, axis=1)
        return Forecast(panel.cluster_ids, starts, panel.freq, samples)


def test_windows_step_back_by_the_stride_from_each_clusters_own_end(panel):
    config = BacktestConfig(horizon=6, windows=3, stride=4, num_samples=5)
    result = backtest(SeasonalNaive(), panel, config)
    ends = panel.last_observed()
    assert [w.hidden for w in result.windows] == [14, 10, 6]
    for window in result.windows:
        expected = pd.DatetimeIndex(ends.to_numpy()) - (window.hidden - 1) * panel.step
        assert window.origins.equals(expected)
        for c, cluster in enumerate(panel.cluster_ids):
            series = panel.history().query(f"{ID} == @cluster")[DEMAND].to_numpy()
            start = len(series) - window.hidden
            np.testing.assert_array_equal(window.actuals[c], series[start:start + 6])


def test_the_forecaster_never_sees_data_after_the_origin(panel):
    spy = Spy()
    config = BacktestConfig(horizon=6, windows=3, stride=4, num_samples=5, refit=True)
    result = backtest(spy, panel, config)
    assert len(spy.asked) == len(spy.fitted) == 3
    for window, fitted, asked in zip(result.windows, spy.fitted, spy.asked, strict=True):
        for seen in (fitted, asked):
            origins = pd.Series(window.origins, index=panel.cluster_ids)
            assert (seen.last_observed() == origins - panel.step).all()
            future = seen.frame[seen.frame[DEMAND].isna()]
            assert future.groupby(ID).size().eq(6).all()  # the horizon's known-future rows, no more
            assert future["cpu_util"].isna().all()  # past-only usage is as unknown as demand
            assert future[["temperature", "event"]].notna().all().all()

    # Changing every value after window 0's origin must not change window 0's forecast.
    tampered = panel.frame.copy()
    after = tampered[TIME] >= tampered[ID].map(pd.Series(result.windows[0].origins, index=panel.cluster_ids))
    tampered.loc[after, [DEMAND, "cpu_util"]] *= 7
    again = backtest(Spy(), panel.replace_frame(tampered), config)
    np.testing.assert_array_equal(again.windows[0].forecast.samples, result.windows[0].forecast.samples)
    assert not np.array_equal(again.windows[2].forecast.samples, result.windows[2].forecast.samples)


def test_fit_once_fits_before_the_earliest_origin_and_refit_fits_every_window(panel):
    once, every = Spy(), Spy()
    backtest(once, panel, BacktestConfig(horizon=6, windows=3, num_samples=2))
    result = backtest(every, panel, BacktestConfig(horizon=6, windows=3, num_samples=2, refit=True))
    assert len(once.fitted) == 1 and len(every.fitted) == 3
    earliest = pd.Series(result.windows[0].origins, index=panel.cluster_ids)
    assert (once.fitted[0].last_observed() == earliest - panel.step).all()
    assert [w.fit_seconds > 0 for w in result.windows] == [True, True, True]


def test_an_oracle_scores_zero_in_every_window(panel):
    result = backtest(Oracle(panel), panel, BacktestConfig(horizon=6, windows=4, stride=3, num_samples=3))
    per_window = result.per_window()
    assert per_window["mean_wql"].max() == pytest.approx(0.0, abs=1e-12)
    assert per_window["nd"].max() == pytest.approx(0.0, abs=1e-12)
    assert result.aggregate["crps"] == pytest.approx(0.0, abs=1e-12)


def test_results_per_window_per_cluster_and_pooled(panel):
    seen = []
    config = BacktestConfig(horizon=6, windows=2, num_samples=4)
    result = backtest(SeasonalNaive(), panel, config, on_window=seen.append)
    assert [w.index for w in seen] == [0, 1]
    per_cluster = result.per_cluster()
    assert per_cluster.index.names == ["window", ID]
    assert len(per_cluster) == 2 * len(panel.cluster_ids)
    assert {"mean_wql", "crps", "nd", "mase", "coverage_0.9", "interval_coverage_90", "origin"} <= set(per_cluster)
    assert list(result.per_window().index) == [0, 1]
    pooled = aggregate_scores(per_cluster.drop(columns="origin"))
    assert result.aggregate["mean_wql"] == pytest.approx(pooled["mean_wql"])
    assert result.aggregate["num_items"] == 2 * len(panel.cluster_ids)
    samples, actuals = result.samples()
    assert samples.shape == (8, 4, 6) and actuals.shape == (8, 6)


def test_visible_keeps_known_covariates_for_the_horizon_only(panel):
    seen = visible(panel, hidden=10, horizon=4)
    future = seen.frame[seen.frame[DEMAND].isna()]
    assert future.groupby(ID).size().eq(4).all()
    assert (seen.lengths() == panel.lengths() - 10).all()


def test_bad_settings_and_bad_forecasts_fail_with_the_reason(panel):
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        BacktestConfig(horizon=0)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        BacktestConfig(horizon=4, stride=0)
    with pytest.raises(ValueError, match="shortest cluster has 215 observations"):
        backtest(SeasonalNaive(), panel, BacktestConfig(horizon=100, windows=3))

    class Short(SeasonalNaive):
        def predict(self, panel, horizon, num_samples=1):
            return super().predict(panel, horizon - 1, num_samples)

    with pytest.raises(ValueError, match="returned 3 samples × 5 steps; asked for 3 × 6"):
        backtest(Short(), panel, BacktestConfig(horizon=6, num_samples=3))

    class Partial(SeasonalNaive):
        def predict(self, panel, horizon, num_samples=1):
            return super().predict(panel, horizon, num_samples).select(panel.cluster_ids[1:])

    with pytest.raises(ValueError, match=r"no forecast for clusters \['cluster-000'\]"):
        backtest(Partial(), panel, BacktestConfig(horizon=6, num_samples=3))

    class Late(SeasonalNaive):
        def predict(self, panel, horizon, num_samples=1):
            f = super().predict(panel, horizon, num_samples)
            return Forecast(f.cluster_ids, f.starts + panel.step, f.freq, f.samples)

    with pytest.raises(ValueError, match="cluster 'cluster-000': forecast starts at .* expected"):
        backtest(Late(), panel, BacktestConfig(horizon=6, num_samples=3))

"""The synthetic generator: deterministic, and its demand really moves with its covariates."""

import numpy as np
import pytest

from forecasting.synthetic import SyntheticSpec, generate_frame, generate_panel


def test_same_seed_same_data_other_seed_other_data():
    assert generate_frame(SyntheticSpec(seed=4)).equals(generate_frame(SyntheticSpec(seed=4)))
    assert not generate_frame(SyntheticSpec(seed=4)).equals(generate_frame(SyntheticSpec(seed=5)))


def test_panel_passes_the_data_contract_with_declared_covariates():
    panel = generate_panel(SyntheticSpec(num_clusters=5, days=14))
    assert panel.known_covariates == ("temperature", "event") and panel.past_covariates == ("cpu_util",)
    assert panel.lengths().tolist() == [14 * 24] * 5
    assert (panel.history()["demand"] == panel.history()["demand"].round()).all()  # counts


def test_daily_and_weekly_cycles_are_present():
    frame = generate_frame(SyntheticSpec(num_clusters=8, days=56, events_per_week=0, seed=1))
    for _, group in frame.groupby("cluster_id"):
        y = group["demand"].to_numpy()
        y = y - y.mean()
        daily = np.corrcoef(y[:-24], y[24:])[0, 1]
        half_day = np.corrcoef(y[:-12], y[12:])[0, 1]
        assert daily > 0.6 and half_day < 0
    weekend = frame["timestamp"].dt.dayofweek >= 5
    assert frame.loc[weekend, "demand"].mean() < 0.95 * frame.loc[~weekend, "demand"].mean()


def test_scheduled_events_cause_spikes():
    frame = generate_frame(SyntheticSpec(num_clusters=10, days=28, events_per_week=2, seed=2))
    hour = frame["timestamp"].dt.hour
    in_event = frame["event"] == 1
    assert in_event.any()
    # Compare with the same hours of day outside events, so the daily cycle does not explain it.
    ratio = (frame[in_event].groupby("cluster_id")["demand"].mean()
             / frame[~in_event & hour.between(10, 23)].groupby("cluster_id")["demand"].mean())
    assert ratio.median() > 1.4


def test_hot_hours_raise_demand():
    frame = generate_frame(SyntheticSpec(num_clusters=12, days=42, events_per_week=0, seed=3))
    afternoon = frame[frame["timestamp"].dt.hour.between(14, 16)]
    hot = afternoon["temperature"] > afternoon["temperature"].quantile(0.8)
    cold = afternoon["temperature"] < afternoon["temperature"].quantile(0.2)
    normalised = afternoon["demand"] / afternoon.groupby("cluster_id")["demand"].transform("mean")
    assert normalised[hot].mean() > normalised[cold].mean() * 1.05


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="num_clusters"):
        SyntheticSpec(num_clusters=0)

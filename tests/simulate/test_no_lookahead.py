"""The forecaster sees only data before the current step, however the replay is scheduled."""

import numpy as np
import pandas as pd

from forecasting.baselines import SeasonalBootstrap
from forecasting.data import DEMAND, ID, TIME, Panel
from pipelines.simulate import run_simulation
from pipelines.simulate_traces import build_trace, load_trace_panel


class Recording:
    """Wraps a forecaster; records, per call, the latest demand timestamp it was shown per cluster."""

    def __init__(self) -> None:
        self.inner = SeasonalBootstrap(seed=0)
        self.fits: list[pd.Series] = []
        self.predictions: list[pd.Series] = []
        self.future_demand_seen = 0

    def fit(self, panel: Panel) -> None:
        self.fits.append(panel.last_observed())

    def predict(self, panel: Panel, horizon: int, num_samples: int):
        shown = panel.last_observed()
        self.predictions.append(shown)
        # Rows after the cut carry known-future covariates only: their demand must be empty.
        after = panel.frame[TIME].to_numpy() > panel.frame[ID].map(shown).to_numpy()
        self.future_demand_seen += int(panel.frame.loc[after, DEMAND].notna().sum())
        return self.inner.predict(panel, horizon, num_samples)


def test_every_forecast_and_fit_sees_only_the_past(tiny):
    config = tiny(forecaster={"cadence_steps": 3, "refit_every_steps": 6, "horizon": 8})
    recorder = Recording()
    result = run_simulation(config, forecaster=recorder, write_report=False)
    trace = result.trace
    starts = {c: trace.panel.history()[trace.panel.history()[ID] == c][TIME].iloc[s]
              for c, s in zip(trace.cluster_ids, trace.start, strict=True)}
    step = trace.panel.step
    assert len(recorder.predictions) == 36 // 3 and len(recorder.fits) == 6
    for i, shown in enumerate(recorder.predictions):
        for cluster, latest in shown.items():
            now = starts[cluster] + 3 * i * step  # the replay step this forecast is issued at
            assert latest == now - step  # everything before it, nothing from it on
    for i, shown in enumerate(recorder.fits):
        assert (shown < pd.Series(starts) + 6 * i * step).all()
    assert recorder.future_demand_seen == 0


def test_poisoned_future_demand_does_not_change_earlier_decisions(tiny):
    # A fixed unit size: by default units are sized from the whole trace's peak (a unit of measure
    # the experimenter picks, the same for every policy), which poisoned values would change.
    config = tiny(forecaster={"cadence_steps": 2, "horizon": 6}, trace={"capacity_per_unit": 20.0})
    clean = run_simulation(config, write_report=False)
    name, panel = load_trace_panel(config.trace)
    trace = build_trace(name, panel, config.trace)
    poison_from = 20  # replay step from which demand becomes absurd
    frame = panel.frame.copy()
    position = frame.groupby(ID, sort=False).cumcount().to_numpy()
    start = frame[ID].map(dict(zip(trace.cluster_ids, trace.start, strict=True))).to_numpy()
    frame.loc[position >= start + poison_from, DEMAND] *= 100.0
    poisoned_panel = panel.replace_frame(frame)

    import pipelines.simulate as simulate

    original = simulate.load_trace_panel
    simulate.load_trace_panel = lambda cfg: (name, poisoned_panel)
    try:
        poisoned = run_simulation(config, write_report=False)
    finally:
        simulate.load_trace_panel = original
    for a, b in zip(clean.runs, poisoned.runs, strict=True):
        # Capacity at step t is decided with demand up to t - 1: identical through the first poisoned step.
        np.testing.assert_array_equal(a.capacity[: poison_from + 1], b.capacity[: poison_from + 1])
        if a.name != "static":  # and the poison does reach every adaptive policy afterwards
            assert not np.array_equal(a.capacity[poison_from + 1:], b.capacity[poison_from + 1:])


def test_a_single_cluster_with_known_covariates_keeps_its_trace_intact(tiny):
    config = tiny(trace={"clusters": 1}, forecaster={"cadence_steps": 4, "horizon": 6})
    recorder = Recording()
    result = run_simulation(config, forecaster=recorder, write_report=False)
    assert recorder.future_demand_seen == 0
    assert result.trace.panel.frame[DEMAND].notna().all()  # emptying the future rows shown did not touch it

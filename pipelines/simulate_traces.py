"""Demand traces for the simulator: a panel, the part of it replayed, and the size of one unit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.data import DEMAND, ID, TIME, DataValidationError, Panel, read_panel
from forecasting.datasets import load_dataset
from forecasting.synthetic import SyntheticSpec, generate_panel
from pipelines.simulate_config import TraceConfig

MIN_HISTORY = 2  # steps of history a forecaster needs before the replay, at the very least


@dataclass(frozen=True)
class Trace:
    """`panel` holds everything (history and the replayed steps); the replay starts at row
    `start[c]` of cluster c's observed rows and lasts `steps`; `demand` is `[steps, clusters]` in
    demand units; one unit serves `capacity_per_unit[c]`."""

    name: str
    panel: Panel
    start: np.ndarray
    demand: np.ndarray
    capacity_per_unit: np.ndarray
    training_peak: np.ndarray  # largest demand before the replay, per cluster
    timestamps: pd.DatetimeIndex  # replayed steps of the first cluster

    @property
    def steps(self) -> int:
        return self.demand.shape[0]

    @property
    def cluster_ids(self) -> list[str]:
        return self.panel.cluster_ids

    @property
    def step_s(self) -> float:
        return self.panel.step.total_seconds()

    @property
    def demand_units(self) -> np.ndarray:
        return self.demand / self.capacity_per_unit[None, :]

    @property
    def last_history_units(self) -> np.ndarray:
        """Demand of each cluster at the step before the replay, in units."""
        values = self.panel.history().groupby(ID, sort=False)[DEMAND].apply(lambda s: s.to_numpy())
        return np.array([v[s - 1] for v, s in zip(values, self.start, strict=True)]) / self.capacity_per_unit


def load_trace_panel(config: TraceConfig) -> tuple[str, Panel]:
    if config.source == "synthetic":
        panel = generate_panel(SyntheticSpec(**config.synthetic.model_dump()))
        return "synthetic", panel
    if config.source == "file":
        assert config.path is not None
        panel = read_panel(config.path, past_covariates=config.past_covariates,
                           known_covariates=config.known_covariates, freq=config.freq)
        return config.path.stem, panel
    assert config.dataset is not None
    options = {"resample": config.resample} if config.resample else {}
    return config.dataset, load_dataset(config.dataset, config.data_dir, **options).panel


def build_trace(name: str, panel: Panel, config: TraceConfig) -> Trace:
    """Cut `panel` into history and replay as `config` says, and size units."""
    if config.clusters is not None:
        panel = panel.select(panel.cluster_ids[: config.clusters])
    panel = panel.replace_frame(panel.history().reset_index(drop=True))  # the replay reveals demand itself
    groups = [g for _, g in panel.frame.groupby(ID, sort=False)]
    if config.holdout_steps is not None:
        steps = config.holdout_steps
        starts = np.array([len(g) - steps for g in groups])
    else:
        starts, steps = _window_positions(groups, config, panel.step)
    short = [str(g[ID].iloc[0]) for g, s in zip(groups, starts, strict=True) if s < MIN_HISTORY]
    if short:
        raise DataValidationError(
            f"has fewer than {MIN_HISTORY} steps of history before the replayed window ({len(short)} such "
            f"clusters)", source=panel.source, cluster=short[0])
    demand = np.stack([g[DEMAND].to_numpy()[s: s + steps] for g, s in zip(groups, starts, strict=True)], axis=1)
    peak = np.array([g[DEMAND].max() for g in groups], dtype=float)
    if config.capacity_per_unit is not None:
        capacity = np.full(len(groups), config.capacity_per_unit)
    else:
        capacity = np.where(peak > 0, peak / config.peak_units, 1.0)
    training_peak = np.array([g[DEMAND].to_numpy()[:s].max() for g, s in zip(groups, starts, strict=True)])
    timestamps = pd.DatetimeIndex(groups[0][TIME].to_numpy()[starts[0]: starts[0] + steps])
    return Trace(name, panel, starts, demand, capacity, training_peak, timestamps)


def _window_positions(groups: list[pd.DataFrame], config: TraceConfig, step: pd.Timedelta) -> tuple[np.ndarray, int]:
    start = pd.Timestamp(config.start)
    ends = [g[TIME].iloc[-1] + step for g in groups]
    end = pd.Timestamp(config.end) if config.end is not None else min(ends)
    starts = []
    for g, cluster_end in zip(groups, ends, strict=True):
        cluster = str(g[ID].iloc[0])
        if not g[TIME].iloc[0] <= start < cluster_end or end > cluster_end:
            raise DataValidationError(
                f"the replayed window {start} → {end} is not inside the trace ({g[TIME].iloc[0]} → {cluster_end})",
                source="trace", column=TIME, cluster=cluster)
        starts.append(int(np.searchsorted(g[TIME].to_numpy(), np.datetime64(start))))
    steps = int((end - start) / step)
    if steps < 1:
        raise DataValidationError(f"the replayed window {start} → {end} holds no step", source="trace", column=TIME)
    return np.array(starts), steps

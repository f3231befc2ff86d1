"""A seeded generator of realistic cluster demand: the demo's embedded default data.

Each cluster's request count per step is Poisson around a mean built from
    level × trend × daily cycle × weekly cycle × temperature effect × scheduled-event spike × noise.
Covariates:
  - `temperature` (known-future: a weather forecast), shared by the clusters of one region; hot
    hours raise demand (cooling load, people indoors);
  - `event` (known-future: 1 during a scheduled event such as a sale or a match, else 0); events
    multiply demand by 1.5–3×, so a model that reads the covariate can see spikes coming;
  - `cpu_util` (past-only: observed utilisation of the cluster's current capacity).
The same seed gives the same panel, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.data import DEMAND, ID, TIME, Panel, validate_panel


@dataclass(frozen=True)
class SyntheticSpec:
    num_clusters: int = 12
    days: int = 42
    freq: str = "h"
    start: str = "2025-01-06"  # a Monday
    num_regions: int = 3
    events_per_week: float = 1.5
    noise: float = 0.06
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_clusters < 1 or self.days < 1 or self.num_regions < 1:
            raise ValueError("num_clusters, days and num_regions must be >= 1")
        if self.events_per_week < 0 or self.noise < 0:
            raise ValueError("events_per_week and noise must be >= 0")


def generate_frame(spec: SyntheticSpec = SyntheticSpec()) -> pd.DataFrame:
    rng = np.random.default_rng(spec.seed)
    times = pd.date_range(spec.start, periods=int(pd.Timedelta(days=spec.days) / pd.Timedelta(
        pd.tseries.frequencies.to_offset(spec.freq))), freq=spec.freq)
    n, t = spec.num_clusters, len(times)
    hour = np.asarray(times.hour + times.minute / 60)[None, :]
    weekend = np.asarray(times.dayofweek >= 5)[None, :]
    elapsed = np.linspace(0.0, 1.0, t)[None, :]

    level = rng.lognormal(np.log(120), 0.6, size=(n, 1))
    growth = rng.uniform(-0.1, 0.35, size=(n, 1))
    daily_amplitude = rng.uniform(0.3, 0.6, size=(n, 1))
    peak_hour = rng.normal(15, 2, size=(n, 1))
    weekend_factor = rng.uniform(0.55, 0.9, size=(n, 1))
    heat_sensitivity = rng.uniform(0.2, 0.7, size=(n, 1))

    region = rng.integers(0, spec.num_regions, size=n)
    temperature = _regional_temperature(rng, times, spec.num_regions)[region]
    event, event_boost = _scheduled_events(rng, n, t, times, spec.events_per_week)

    mean = (
        level
        * (1 + growth * elapsed)
        * (1 + daily_amplitude * np.cos(2 * np.pi * (hour - peak_hour) / 24))
        * np.where(weekend, weekend_factor, 1.0)
        * (1 + heat_sensitivity * np.clip(temperature - 22, 0, None) / 10)
        * event_boost
        * rng.lognormal(0, spec.noise, size=(n, t))
    )
    demand = rng.poisson(mean).astype(float)
    capacity = np.quantile(mean, 0.9, axis=1, keepdims=True)
    cpu_util = np.clip(demand / capacity * 0.7 + rng.normal(0, 0.02, size=(n, t)), 0, 1)

    return pd.DataFrame({
        ID: np.repeat([f"cluster-{i:03d}" for i in range(n)], t),
        TIME: np.tile(times, n),
        DEMAND: demand.ravel(),
        "temperature": temperature.ravel().round(2),
        "event": event.ravel(),
        "cpu_util": cpu_util.ravel().round(4),
    })


def generate_panel(spec: SyntheticSpec = SyntheticSpec()) -> Panel:
    return validate_panel(generate_frame(spec), source=f"synthetic(seed={spec.seed})", freq=spec.freq,
                          known_covariates=["temperature", "event"], past_covariates=["cpu_util"])


def _regional_temperature(rng: np.random.Generator, times: pd.DatetimeIndex, regions: int) -> np.ndarray:
    """Daily swing plus a slow weather pattern per region (an AR(1) walk, smoothed)."""
    hour = np.asarray(times.hour + times.minute / 60)
    base = rng.uniform(14, 24, size=(regions, 1))
    swing = rng.uniform(4, 9, size=(regions, 1))
    weather = np.cumsum(rng.normal(0, 0.15, size=(regions, len(times))), axis=1)
    weather -= np.linspace(0, 1, len(times))[None, :] * weather[:, -1:]  # no long drift
    return base + swing * np.sin(2 * np.pi * (hour - 9) / 24)[None, :] + weather


def _scheduled_events(
    rng: np.random.Generator, n: int, t: int, times: pd.DatetimeIndex, per_week: float
) -> tuple[np.ndarray, np.ndarray]:
    """Events start at a whole hour between 10:00 and 20:00, last 2–6 hours, and boost demand 1.5–3×."""
    step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(hours=1)
    steps_per_hour = max(1, int(pd.Timedelta(hours=1) / step))
    weeks = t * step / pd.Timedelta(days=7)
    event = np.zeros((n, t))
    boost = np.ones((n, t))
    candidate_starts = np.flatnonzero((times.hour >= 10) & (times.hour <= 20) & (times.minute == 0))
    if len(candidate_starts) == 0:
        return event, boost
    for c in range(n):
        for start in rng.choice(candidate_starts, size=rng.poisson(per_week * weeks), replace=True):
            length = rng.integers(2, 7) * steps_per_hour
            event[c, start:start + length] = 1.0
            boost[c, start:start + length] = np.maximum(boost[c, start:start + length], rng.uniform(1.5, 3.0))
    return event, boost

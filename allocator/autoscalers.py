"""Capacity controllers replayed step by step by the simulator, and the baselines shadowcast must beat.

A controller sees what a real one would at the start of step t: demand up to t-1, its fleet, and
the latest forecast (issued from data before its first step). It returns `Targets` for every
(knob setting, cluster) pair at once. Baselines, as users run them:
- `Static`: a fixed fleet sized at the training period's peak times a headroom.
- `Hpa`: the Kubernetes Horizontal Pod Autoscaler rule (`desired = ceil(current × utilisation /
  target)`, a ±10 % tolerance, a sync period, the 5-minute scale-down stabilisation window), new
  units booting cold; with `warm_pool` > 0 it keeps that many warm units like an EC2 Auto Scaling
  warm pool, refilled after use and reused on scale-in.
- `PredictivePoint`: cloud predictive scaling (EC2 style): capacity for the *point* forecast at a
  target utilisation, launched ahead by the provisioning time (scheduling buffer), with the same
  target-tracking rule underneath for what the forecast misses, optionally with a warm pool.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from allocator.fleetsim import Fleet, Targets
from allocator.policy import units, window_max


@dataclass(frozen=True)
class ForecastWindow:
    """The latest forecast in capacity units, ready for per-step lookups.

    `window(w)[c, h, :]`: sorted samples of the largest demand of cluster c over steps [h, h + w]
    of the forecast (w = 0: the demand at h itself); `median[c, h]`.
    """

    issued: int
    windows: dict[int, np.ndarray]
    median: np.ndarray

    @classmethod
    def build(cls, issued: int, samples: np.ndarray, windows: Iterable[int] = (0,)) -> ForecastWindow:
        """From sample paths `[clusters, samples, horizon]` in capacity units."""
        sorted_max = {w: np.sort(np.moveaxis(window_max(samples, w), 1, -1), axis=-1) for w in set(windows) | {0}}
        return cls(issued, sorted_max, np.median(samples, axis=1))

    def window(self, w: int) -> np.ndarray:
        return self.windows[w]

    @property
    def horizon(self) -> int:
        return self.median.shape[1]

    def offset(self, t: int) -> int:
        """Index of step t in this forecast (the last step when t lies beyond it)."""
        return min(max(t - self.issued, 0), self.horizon - 1)


@dataclass(frozen=True)
class Observation:
    t: int
    last_demand: np.ndarray  # [clusters] demand at t-1 in capacity units
    forecast: ForecastWindow | None


class Controller(Protocol):
    name: str
    knob: str
    knob_values: tuple[float, ...]
    scale_in_to_warm: bool

    def initial(self, demand: np.ndarray, forecast: ForecastWindow | None) -> tuple[np.ndarray, np.ndarray]:
        """Active and warm units of the fleet that exists at step 0, given demand just before it."""
        ...

    def decide(self, obs: Observation, fleet: Fleet) -> Targets: ...

    def observe(self, t: int, demand: np.ndarray) -> None:
        """Demand of step t became known (for controllers that learn online)."""
        ...

    def events(self) -> dict[str, np.ndarray]:
        """Counts per `[variants, clusters]` of the controller's own events (switchovers, reverts)."""
        ...


def _column(values, clusters: int) -> np.ndarray:
    return np.repeat(np.asarray(values, dtype=float)[:, None], clusters, axis=1)


class Static:
    """Over-provisioning: the training period's peak × headroom, always on; failures are replaced."""

    name, knob, scale_in_to_warm = "static", "headroom", False

    def __init__(self, training_peak: np.ndarray, headroom: tuple[float, ...]) -> None:
        self.knob_values = tuple(float(h) for h in headroom)
        self.fleet = units(np.asarray(headroom, dtype=float)[:, None] * np.asarray(training_peak)[None, :])
        self.fleet = np.maximum(self.fleet, 1)

    def initial(self, demand, forecast):
        return self.fleet, np.zeros_like(self.fleet)

    def decide(self, obs: Observation, fleet: Fleet) -> Targets:
        return Targets(self.fleet, self.fleet, self.fleet)

    def observe(self, t, demand):
        return None

    def events(self):
        return {}


@dataclass(frozen=True)
class HpaSettings:
    sync_period_s: float = 15.0
    stabilisation_s: float = 300.0  # scale-down stabilisation window
    tolerance: float = 0.1  # no change while utilisation / target stays within 1 ± tolerance
    min_replicas: int = 1
    metric: str = "utilisation"  # "utilisation" (resource metric, saturates at 100 %) or "demand" (KEDA-style)

    def __post_init__(self) -> None:
        if self.metric not in ("utilisation", "demand"):
            raise ValueError(f"HPA metric must be 'utilisation' or 'demand', got {self.metric!r}")


class Hpa:
    """The Kubernetes HPA rule, optionally over an EC2-style warm pool.

    With the default resource metric, utilisation is measured on the ready units and cannot exceed
    100 % (a saturated unit does no more work), and units still booting count as idle when scaling
    up, as the HPA controller treats not-ready pods; so a fleet far behind a spike grows by at most
    1 / target per boot time, as it does in a cluster. With `metric="demand"` (an external
    request-rate metric, as KEDA feeds it) the utilisation implied by demand is not capped. A sync
    period shorter than a step acts every step (the trace cannot show more).
    """

    name, knob = "reactive", "target_utilisation"

    def __init__(self, clusters: int, step_s: float, targets: tuple[float, ...], warm_pool: tuple[int, ...] | None = None,
                 settings: HpaSettings = HpaSettings(), name: str | None = None, knob: str | None = None) -> None:
        if any(not 0 < u <= 1 for u in targets):
            raise ValueError(f"HPA target utilisation must lie in (0, 1], got {list(targets)}")
        self.settings = settings
        self.name = name or ("reactive+warmpool" if warm_pool is not None else "reactive")
        self.knob = knob or ("warm_pool" if warm_pool is not None else "target_utilisation")
        pool = tuple(0 for _ in targets) if warm_pool is None else tuple(warm_pool)
        if len(pool) != len(targets):
            raise ValueError("one warm pool size per target utilisation is needed")
        self.knob_values = tuple(float(v) for v in (pool if warm_pool is not None else targets))
        self.scale_in_to_warm = warm_pool is not None
        self.utilisation = _column(targets, clusters)
        self.pool = _column(pool, clusters).astype(np.int64)
        self.sync_every = max(1, math.floor(settings.sync_period_s / step_s + 1e-9))
        self.window = max(1, math.ceil(settings.stabilisation_s / (self.sync_every * step_s) - 1e-9))
        self.replicas = np.ones_like(self.pool)
        self._recommendations: np.ndarray | None = None

    def _recommend(self, demand: np.ndarray, ready: np.ndarray) -> np.ndarray:
        ready = np.maximum(ready, 1)
        used = demand[None, :] if self.settings.metric == "demand" else np.minimum(demand[None, :], ready)
        ratio = used / (ready * self.utilisation)
        raw = np.maximum(units(used / self.utilisation), self.settings.min_replicas)
        # Scaling up, units still booting count as idle: never fewer than the replicas already asked for.
        raw = np.where(ratio > 1, np.maximum(raw, self.replicas), raw)
        return np.where(np.abs(ratio - 1) <= self.settings.tolerance, self.replicas, raw)

    def initial(self, demand, forecast):
        self.replicas = np.maximum(units(np.asarray(demand)[None, :] / self.utilisation), self.settings.min_replicas)
        self._recommendations = np.repeat(self.replicas[None], self.window, axis=0)
        return self.replicas, self.pool

    def replicas_at(self, obs: Observation, fleet: Fleet) -> np.ndarray:
        if obs.t % self.sync_every == 0:
            assert self._recommendations is not None, "initial() first"
            self._recommendations = np.roll(self._recommendations, 1, axis=0)
            self._recommendations[0] = self._recommend(obs.last_demand, fleet.active)
            # Scale-up is immediate (the newest recommendation is the largest); scale-down waits for
            # the highest recommendation of the window to fall.
            self.replicas = self._recommendations.max(axis=0)
        return self.replicas

    def decide(self, obs: Observation, fleet: Fleet) -> Targets:
        replicas = self.replicas_at(obs, fleet)
        return Targets(replicas, replicas + self.pool, replicas + self.pool)

    def observe(self, t, demand):
        return None

    def events(self):
        return {}


class PredictivePoint:
    """Predictive scaling on the point (median) forecast, pre-launched by the provisioning lead time,
    over target tracking (the HPA rule) for what the forecast misses; optionally a warm pool."""

    name, knob = "predictive-point", "target_utilisation"

    def __init__(self, clusters: int, step_s: float, targets: tuple[float, ...], cold_lead: int,
                 warm_pool: tuple[int, ...] | None = None, settings: HpaSettings = HpaSettings()) -> None:
        self.tracking = Hpa(clusters, step_s, targets, warm_pool, settings)
        self.knob_values = tuple(float(u) for u in targets)
        self.scale_in_to_warm = warm_pool is not None
        self.cold_lead = cold_lead

    def initial(self, demand, forecast):
        return self.tracking.initial(demand, forecast)

    def decide(self, obs: Observation, fleet: Fleet) -> Targets:
        tracking = self.tracking.replicas_at(obs, fleet)
        pool = self.tracking.pool
        if obs.forecast is None:
            return Targets(tracking, tracking + pool, tracking + pool)
        h = obs.forecast.offset(obs.t)
        utilisation = self.tracking.utilisation
        now = units(obs.forecast.median[None, :, h] / utilisation)
        # Scheduling buffer: order now what the forecast needs by the time an order lands.
        median = window_max(obs.forecast.median[:, h:], self.cold_lead)[:, 0]
        ahead = units(median[None, :] / utilisation)
        active = np.maximum(tracking, now)
        order = np.maximum(active, ahead) + pool
        return Targets(active, order, order)

    def observe(self, t, demand):
        return None

    def events(self):
        return {}

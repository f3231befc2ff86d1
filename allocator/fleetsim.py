"""A count-based model of a fleet: units move between cold (on order), warm, active and standby.

Every array is `[variants, clusters]`: one policy with several settings of its knob, over all
clusters at once, so a simulator loops over time only. Pure numpy; randomness (unit failures) comes
from a seeded generator.

Time: step t covers [tΔ, (t+1)Δ). Decisions are taken at the start of a step and see demand up to
t-1. A unit ordered at step t is ready cold_s later: it serves from step t + floor(cold_s / Δ), and
in that first step only for the part left after it arrives. Warm activation works the same way with
warm_s. Units on order and activating are billed as active (a booting machine is paid for); warm and
standby units cost `warm_fraction` of that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from allocator.types import CostModel

_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Delay:
    """A delay in whole steps plus the fraction of the arrival step it still takes."""

    steps: int
    lost_fraction: float

    @classmethod
    def of(cls, seconds: float, step_s: float) -> Delay:
        exact = seconds / step_s
        steps = int(math.floor(exact + _TOLERANCE))
        return cls(steps, max(0.0, exact - steps) if exact - steps > _TOLERANCE else 0.0)

    @property
    def exact(self) -> float:
        return self.steps + self.lost_fraction


@dataclass(frozen=True)
class Scenario:
    """What goes wrong: independent unit failures at a rate, and the loss of one region at a step.

    The outage removes, from every pool, the units the lost region held (ceil(n / regions) of n units
    spread evenly, the largest share); replacements go to the surviving regions.
    """

    failure_rate_per_hour: float = 0.0
    outage_step: int | None = None
    regions: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.failure_rate_per_hour < 0:
            raise ValueError(f"failure_rate_per_hour must be >= 0, got {self.failure_rate_per_hour}")
        if self.regions < 1:
            raise ValueError(f"regions must be >= 1, got {self.regions}")


@dataclass
class Targets:
    """What a policy wants now, in units, each `[variants, clusters]`.

    `active`: units serving (activating ones count); `order`: total units to have, counting those on
    order; `keep`: warm units are released (and orders cancelled) only above this total; `standby`:
    former active units to hold aside for a revert (tiered switchovers), None when unused.
    """

    active: np.ndarray
    order: np.ndarray
    keep: np.ndarray
    standby: np.ndarray | None = None


@dataclass
class StepOutcome:
    capacity: np.ndarray  # units serving over the step (fractions for units arriving mid-step)
    unserved: np.ndarray  # demand beyond capacity, capacity units
    cost: np.ndarray  # infrastructure cost of the step


def _ring(length: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros((length, *shape), dtype=np.int64)


@dataclass
class Fleet:
    shape: tuple[int, int]
    cold: Delay
    warm_delay: Delay
    costs: CostModel
    step_s: float
    scenario: Scenario = Scenario()
    scale_in_to_warm: bool = False  # deactivated units become warm shadows instead of being released
    active: np.ndarray = field(init=False)
    warm: np.ndarray = field(init=False)
    standby: np.ndarray = field(init=False)
    activations: np.ndarray = field(init=False)  # steps on which warm units were activated
    deactivations: np.ndarray = field(init=False)  # steps on which active units stepped down

    def __post_init__(self) -> None:
        zeros = np.zeros(self.shape, dtype=np.int64)
        self.active, self.warm, self.standby = zeros.copy(), zeros.copy(), zeros.copy()
        self.activations, self.deactivations = zeros.copy(), zeros.copy()
        self._orders = _ring(self.cold.steps + 1, self.shape)
        self._activating = _ring(self.warm_delay.steps + 1, self.shape)
        self._wanted_active = zeros.copy()
        self._stepped_down = zeros.copy()
        self._rng = np.random.default_rng(self.scenario.seed)
        self._fail_p = 1 - math.exp(-self.scenario.failure_rate_per_hour * self.step_s / 3600)

    # --- views ------------------------------------------------------------------------------
    @property
    def on_order(self) -> np.ndarray:
        return self._orders.sum(axis=0)

    @property
    def activating(self) -> np.ndarray:
        return self._activating.sum(axis=0)

    @property
    def serving_or_soon(self) -> np.ndarray:
        return self.active + self.activating

    @property
    def total(self) -> np.ndarray:
        return self.active + self.activating + self.warm + self.standby + self.on_order

    # --- one step ---------------------------------------------------------------------------
    def start(self, active: np.ndarray, warm: np.ndarray) -> None:
        """A fleet that already exists at step 0 (no boot needed)."""
        self.active = np.broadcast_to(np.asarray(active, dtype=np.int64), self.shape).copy()
        self.warm = np.broadcast_to(np.asarray(warm, dtype=np.int64), self.shape).copy()
        self._wanted_active = self.active.copy()

    def disrupt(self, t: int) -> None:
        """Unit failures, then the region outage if it starts at this step."""
        if self._fail_p > 0:
            for pool in (self.active, self.warm, self.standby):
                pool -= self._rng.binomial(pool, self._fail_p)
        if self.scenario.outage_step is not None and t == self.scenario.outage_step:
            regions = self.scenario.regions
            for pool in (self.active, self.warm, self.standby, self._orders, self._activating):
                pool -= -(-pool // regions)

    def apply(self, t: int, targets: Targets) -> None:
        want = np.maximum(np.asarray(targets.active, dtype=np.int64), 0)
        if targets.standby is not None:
            self._move_standby(t, np.maximum(np.asarray(targets.standby, dtype=np.int64), 0))
        current = self.serving_or_soon
        wake = np.minimum(np.maximum(want - current, 0), self.warm)
        self.warm -= wake
        self._activating[(t + self.warm_delay.steps) % len(self._activating)] += wake
        self.activations += wake > 0
        surplus = np.minimum(np.maximum(current - want, 0), self.active)
        self.active -= surplus
        self._stepped_down = self._stepped_down + surplus  # serving on until their replacements land
        if self.scale_in_to_warm:
            self.warm += surplus
        self.deactivations += surplus > 0
        self._wanted_active = want

        order = np.maximum(np.asarray(targets.order, dtype=np.int64), want + self.standby)
        self._orders[(t + self.cold.steps) % len(self._orders)] += np.maximum(order - self.total, 0)
        keep = np.maximum(np.asarray(targets.keep, dtype=np.int64), want + self.standby)
        self._release(t, np.maximum(self.total - keep, 0))

    def _move_standby(self, t: int, standby: np.ndarray) -> None:
        aside = np.minimum(np.maximum(standby - self.standby, 0), self.active)
        self.active -= aside
        self.standby += aside
        self._stepped_down = self._stepped_down + aside
        back = np.maximum(self.standby - standby, 0)
        self.standby -= back
        self._activating[(t + self.warm_delay.steps) % len(self._activating)] += back

    def _release(self, t: int, excess: np.ndarray) -> None:
        """Warm units go first, then the newest orders (a pending boot is cheapest to cancel)."""
        freed = np.minimum(excess, self.warm)
        self.warm -= freed
        excess = excess - freed
        for ahead in range(self.cold.steps, 0, -1):
            if not excess.any():
                return
            slot = self._orders[(t + ahead) % len(self._orders)]
            cancel = np.minimum(excess, slot)
            slot -= cancel
            excess = excess - cancel

    def serve(self, t: int, demand: np.ndarray) -> StepOutcome:
        """Arrivals of this step, then capacity against `demand` (`[clusters]`, capacity units) and cost."""
        slot = t % len(self._orders)
        arrived = self._orders[slot].copy()
        self._orders[slot] = 0
        to_active = np.minimum(arrived, np.maximum(self._wanted_active - self.serving_or_soon, 0))
        self.active += to_active
        self.warm += arrived - to_active
        slot = t % len(self._activating)
        woken = self._activating[slot].copy()
        self._activating[slot] = 0
        self.active += woken

        # Make-before-break: a unit leaving the active set covers for one being activated meanwhile.
        late = np.maximum(woken - self._stepped_down, 0)
        self._stepped_down = np.zeros_like(self._stepped_down)
        capacity = (self.active - self.cold.lost_fraction * to_active - self.warm_delay.lost_fraction * late).astype(float)
        unserved = np.maximum(np.asarray(demand, dtype=float)[None, :] - capacity, 0.0)
        hours = self.step_s / 3600
        c, w = self.costs.active_unit_cost, self.costs.warm_fraction
        cost = hours * c * (self.active + self.activating + self.on_order + w * (self.warm + self.standby))
        return StepOutcome(capacity, unserved, cost)

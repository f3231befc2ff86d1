"""Perfect foresight: the cheapest fleet that serves every step, a lower bound on any policy's cost.

With demand known, units are interchangeable, so the k-th unit of a cluster is needed exactly at
the steps where ceil(demand) >= k. Between two such spells it can stay active, wait warm (then be
activated the activation time early) or be released and booted again (ordered the boot time early,
and billed while booting), whichever is cheapest for that idle spell's length; before its first
spell it boots just in time, unless the spell starts at step 0 (the fleet exists at the start, as
for every simulated policy). Summing these per-unit optima gives the optimum of the whole fleet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allocator.fleetsim import Delay
from allocator.policy import units
from allocator.types import CostModel


@dataclass(frozen=True)
class OracleResult:
    need: np.ndarray  # [steps, clusters] units serving
    cost: np.ndarray  # [clusters] infrastructure cost over the run
    step_cost: np.ndarray  # [steps, clusters] cost of the serving units (idle-spell and boot costs not spread)


def _gap_cost(gaps: np.ndarray, cold: Delay, warm: Delay, warm_fraction: float) -> np.ndarray:
    """Cost in active unit-steps of one unit's idle spells of the given lengths (steps)."""
    stay_active = gaps.astype(float)
    stay_warm = warm_fraction * gaps + (1 - warm_fraction) * np.minimum(gaps, warm.exact)
    reboot = np.where(gaps >= cold.exact, cold.exact, np.inf)
    return np.minimum(np.minimum(stay_active, stay_warm), reboot)


def oracle(demand_units: np.ndarray, costs: CostModel, step_s: float, cold: Delay, warm: Delay,
           min_active: int = 1) -> OracleResult:
    """`demand_units`: `[steps, clusters]` in capacity units."""
    need = np.maximum(units(demand_units), min_active)
    steps, clusters = need.shape
    unit_steps = need.sum(axis=0).astype(float)
    for c in range(clusters):
        for layer in range(1, int(need[:, c].max()) + 1):
            busy = np.flatnonzero(need[:, c] >= layer)
            gaps = np.diff(busy) - 1
            unit_steps[c] += _gap_cost(gaps[gaps > 0], cold, warm, costs.warm_fraction).sum()
            if busy[0] > 0:
                unit_steps[c] += cold.exact
    hours = step_s / 3600
    return OracleResult(need, costs.active_unit_cost * hours * unit_steps,
                        costs.active_unit_cost * hours * need.astype(float))

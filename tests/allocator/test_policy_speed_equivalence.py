"""`plan` gives exactly the plans it gave before it was made fast.

`policy_expected.npz` holds the plans of the straightforward implementation (full sorts per level,
a shift loop for window maxima; commit 775c2ab) on the seeded forecasts below, which reach every
branch: ties (integer demand), levels in the normal tail, leads longer than the horizon, one path,
shared and region-resilient pools, tiered switchovers and reverts, clusters in several blocks. Rewrite it only for a change
meant to change plans: `.venv/bin/python -m tests.allocator.test_policy_speed_equivalence`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from allocator.policy import plan
from allocator.types import ClusterFleet, CostModel, FleetState, Plan, PolicyConfig, PoolSpec, SwitchoverMode
from forecasting.forecast import Forecast

EXPECTED = Path(__file__).with_name("policy_expected.npz")


def case(name: str) -> Plan:
    rng = np.random.default_rng(sum(map(ord, name)))
    # "blocks": more paths per cluster than `plan` takes in one block (uneven blocks, a pool across them)
    clusters, samples, horizon = (20, 400, 100) if name == "blocks" else (24, 60, 30)
    freq, spec, costs, config = "h", PoolSpec(capacity_per_unit=50, cold_provision_s=7200), CostModel(), PolicyConfig()
    if name == "integer-ties":  # many equal values: which of them a sort or a partition picks must not matter
        clusters, samples = 12, 40
        demand = rng.integers(0, 12, size=(clusters, samples, horizon)).astype(float)
        spec = PoolSpec(capacity_per_unit=1.0, cold_provision_s=600, warm_activation_s=60)
        freq, config = "min", PolicyConfig(active_level=0.8, pool_level=0.95)  # 0.95 · 40: on a sample exactly
    else:
        demand = rng.lognormal(4.0, 0.8, size=(clusters, 1, 1)) * rng.lognormal(0.0, 0.5, (clusters, samples, horizon))
    if name == "tail-levels":  # levels past 1 - 1/(2S): the normal-tail extension
        config = PolicyConfig(active_level=0.995, pool_level=0.9999, revert_threshold=0.001)
    elif name == "minute-leads":  # an active lead of one step, a pool lead of five
        freq, spec, costs = "min", PoolSpec(capacity_per_unit=20, cold_provision_s=290, warm_activation_s=5), \
            CostModel(unserved_penalty=100.0)
    elif name == "lead-past-horizon":
        horizon, spec = 4, PoolSpec(capacity_per_unit=20, cold_provision_s=36000, warm_activation_s=3600)
        demand = demand[:, :, :horizon]
    elif name == "one-path":
        demand = demand[:, :1]
    elif name == "blocks":
        config = PolicyConfig(shared_pool=True)
    elif name == "shared-resilient-tiered":
        spec = PoolSpec(capacity_per_unit=30, cold_provision_s=10800, regions=("a", "b", "c"))
        config = PolicyConfig(shared_pool=True, region_resilient=True, mode=SwitchoverMode.TIERED)
    ids = [f"c{c:02d}" for c in range(demand.shape[0])]
    fleet = FleetState({c: ClusterFleet(active=int(a), standby=int(s)) for c, a, s in
                        zip(ids, rng.integers(0, 8, len(ids)), rng.integers(0, 3, len(ids)), strict=True)})
    return plan(Forecast.aligned(ids, pd.Timestamp("2025-03-01"), freq, demand), fleet, costs, spec, config)


CASES = ("lognormal", "integer-ties", "tail-levels", "minute-leads", "lead-past-horizon", "one-path",
         "shared-resilient-tiered", "blocks")


def arrays(result: Plan) -> dict[str, np.ndarray]:
    """A plan as arrays: per cluster and step, its switchovers as rows, its shared pool and placement."""
    clusters = list(result.clusters.values())
    switchovers = [(c, d.step, list(SwitchoverMode).index(d.mode), d.units, d.probability)
                   for c, p in enumerate(clusters) for d in p.switchovers]
    return {
        "active": np.array([p.active_units for p in clusters]),
        "shadow": np.array([p.shadow_units for p in clusters]),
        "exceed": np.array([p.exceed_probability for p in clusters]),
        "levels": np.array([(p.quantile_level, p.pool_level) for p in clusters]),
        "switchovers": np.array(switchovers, dtype=float).reshape(-1, 5),
        "shared": np.array(result.shared_shadow_units, dtype=np.int64),
        "placement": np.array(sorted(result.placement.items()), dtype=str).reshape(-1, 2),
    }


@pytest.mark.parametrize("name", CASES)
def test_plan_equals_the_saved_plan(name):
    expected = np.load(EXPECTED)
    for key, value in arrays(case(name)).items():
        np.testing.assert_array_equal(value, expected[f"{name}/{key}"], err_msg=f"{name}: {key}")


if __name__ == "__main__":
    np.savez_compressed(EXPECTED, **{f"{name}/{k}": v for name in CASES for k, v in arrays(case(name)).items()})

"""Elasticity metrics, summaries and frontier comparisons on hand-sized numbers."""

import numpy as np
import pandas as pd
import pytest

from pipelines.simulate_metrics import PolicyRun, cheapest_at, elasticity, frontier_dominance, pareto, summarise


def test_spec_rg_elasticity_metrics_by_hand():
    demand = np.array([[1.5], [2.0], [4.0], [2.0]])  # resource demand ceil: 2, 2, 4, 2
    supply = np.array([2.0, 3.0, 3.0, 3.0])[:, None, None]  # over, over, under by 1, over
    m = elasticity(supply, demand)
    assert m["theta_u"][0] == pytest.approx(100 / 4 * (1 / 4))
    assert m["theta_o"][0] == pytest.approx(100 / 4 * (0 + 1 / 2 + 0 + 1 / 2))
    assert m["tau_u"][0] == pytest.approx(25.0)
    assert m["tau_o"][0] == pytest.approx(50.0)
    # Δd: 0, +2, -2; Δs: +1, 0, 0 → directions disagree on all three steps.
    assert m["instability"][0] == pytest.approx(100.0)
    same = elasticity(np.array([2.0, 2.0, 4.0, 2.0])[:, None, None], demand)
    assert same["instability"][0] == 0 and same["theta_u"][0] == 0 and same["theta_o"][0] == 0


def test_summary_counts_cost_unserved_and_minutes():
    steps = 4
    run = PolicyRun("p", "knob", ("a", "b"), (1.0, 2.0), 1,
                    capacity=np.ones((steps, 2, 1)), shadow=np.zeros((steps, 2, 1)),
                    unserved=np.array([0, 0.5, 0, 0.0])[:, None, None] * np.array([1, 0])[None, :, None],
                    cost=np.full((steps, 2, 1), 0.25),
                    events={"activations": np.zeros((2, 1)), "switchovers": np.array([[3], [0]])})
    table = summarise(run, np.full((steps, 1), 1.0), step_s=900.0, oracle_cost=0.5, penalty=10.0)
    assert table["cost"].tolist() == [1.0, 1.0]
    assert table["cost_vs_oracle"].tolist() == [2.0, 2.0]
    assert table["unserved_frac"].tolist() == [0.125, 0.0]
    assert table["unserved_minutes"].tolist() == [15.0, 0.0]
    assert table["penalty_cost"].tolist() == [pytest.approx(10 * 0.25 * 0.5), 0.0]
    assert table["operating_point"].tolist() == [False, True]
    assert table["switchovers"].tolist() == [3, 0]


def points(*pairs):
    return pd.DataFrame([{"setting": f"s{i}", "unserved_frac": u, "cost": c} for i, (u, c) in enumerate(pairs)])


def test_pareto_and_cheapest_at():
    p = points((0.0, 10.0), (0.1, 8.0), (0.1, 9.0), (0.2, 8.5), (0.3, 5.0))
    assert pareto(p)["cost"].tolist() == [10.0, 8.0, 5.0]
    assert cheapest_at(p, 0.15) == 8.0 and cheapest_at(p, -1.0) == float("inf")


def test_frontier_dominance_as_a_step_function():
    ours = points((0.001, 10.0), (0.01, 8.0), (0.05, 6.0))
    assert frontier_dominance(ours, points((0.02, 8.0), (0.06, 7.0))).dominates
    worse = frontier_dominance(ours, points((0.02, 7.9)))  # we need 8.0 to reach 2 % unserved
    assert not worse.dominates and worse.worst_ratio == pytest.approx(8.0 / 7.9)
    below = frontier_dominance(ours, points((0.0, 50.0), (0.02, 9.0)))
    assert below.dominates and below.uncovered == 1 and below.compared == 1

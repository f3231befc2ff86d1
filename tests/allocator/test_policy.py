"""The quantile policy: hand-computed plans, the newsvendor level, shared pools, regions, properties."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocator.policy import (
    critical_ratio,
    empirical_quantile,
    levels_from_costs,
    plan,
    quantile_of_sorted,
    region_resilient_total,
    shared_excess,
    shared_shadow_units,
    size_pools,
    spread,
    summarise_paths,
    window_max,
)
from allocator.types import (
    ClusterFleet,
    CostModel,
    FleetState,
    PolicyConfig,
    PoolSpec,
    SwitchoverMode,
)
from forecasting.forecast import Forecast


def forecast_of(samples: np.ndarray, freq: str = "min", ids=None) -> Forecast:
    ids = ids or [f"c{i}" for i in range(samples.shape[0])]
    return Forecast.aligned(ids, pd.Timestamp("2024-01-01"), freq, samples)


# --- newsvendor levels ----------------------------------------------------------------------------


def test_critical_ratio_is_the_textbook_newsvendor_fraction():
    assert critical_ratio(3.0, 1.0) == pytest.approx(0.75)
    assert critical_ratio(0.0, 1.0) == 0.0
    assert critical_ratio(9.0, 1.0) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        critical_ratio(-1.0, 1.0)


def test_levels_come_from_the_prices():
    levels = levels_from_costs(CostModel(active_unit_cost=1.0, warm_fraction=0.3, unserved_penalty=20.0))
    assert levels.active == pytest.approx(1 - 0.7 / 20)  # 0.965
    assert levels.pool == pytest.approx(1 - 0.3 / 20)  # 0.985
    cheap_penalty = levels_from_costs(CostModel(unserved_penalty=0.5))
    assert cheap_penalty.active == 0.0  # a penalty below the price of a unit: keep nothing spare


def test_policy_picks_the_newsvendor_quantile_of_a_normal_forecast():
    rng = np.random.default_rng(0)
    samples = rng.normal(100.0, 10.0, size=(1, 40_000, 1))
    costs = CostModel(active_unit_cost=1.0, warm_fraction=0.3, unserved_penalty=20.0)
    result = plan(forecast_of(samples), FleetState(), costs, PoolSpec(capacity_per_unit=0.01))
    active_capacity = result.clusters["c0"].active_units[0] * 0.01
    assert active_capacity == pytest.approx(100 + 10 * 1.8119, abs=0.3)  # z(0.965) = 1.8119


# --- a plan computed by hand ----------------------------------------------------------------------


@pytest.fixture
def tiny():
    """8 equally likely paths, d[s, h] = base[h] + 5 s, capacity 10 per unit, cold lead 2 steps."""
    base = np.array([10.0, 20.0, 40.0, 20.0])
    samples = (base[None, :] + 5.0 * np.arange(8)[:, None])[None]
    # c = 1, w = 0.2, p = 1.6: active level 1 - 0.8/1.6 = 0.5, pool level 1 - 0.2/1.6 = 0.875
    costs = CostModel(active_unit_cost=1.0, warm_fraction=0.2, unserved_penalty=1.6)
    spec = PoolSpec(capacity_per_unit=10.0, cold_provision_s=120.0, warm_activation_s=30.0,
                    regions=("r1", "r2", "r3"))
    return forecast_of(samples, ids=["a"]), costs, spec


def test_plan_matches_the_hand_computed_one(tiny):
    forecast, costs, spec = tiny
    result = plan(forecast, FleetState({"a": ClusterFleet(active=3, warm=4)}), costs, spec)
    a = result.clusters["a"]
    # Active: 4th of 8 sorted values (inverted CDF at 0.5) = base + 15 → 25, 35, 55, 35 → units 3, 4, 6, 4.
    assert a.active_units == (3, 4, 6, 4)
    # Pool: 7th of 8 sorted window maxima over [h, h+2] = max(base[h:h+3]) + 30 → 70, 70, 70, 50.
    assert tuple(x + y for x, y in zip(a.active_units, a.shadow_units, strict=True)) == (7, 7, 7, 5)
    assert a.shadow_units == (4, 3, 1, 1)
    assert (a.quantile_level, a.pool_level) == (pytest.approx(0.5), pytest.approx(0.875))
    # P(demand > 30): h0 s ∈ {5, 6, 7}; h1 s ≥ 3; h2 all; h3 s ≥ 3.
    assert a.exceed_probability == pytest.approx((3 / 8, 5 / 8, 1.0, 5 / 8))
    # Threshold 1 - 0.5: first crossed at h1; switched one warm-activation step earlier, to 6 units.
    (decision,) = a.switchovers
    assert (decision.step, decision.mode, decision.units, decision.probability) == (
        0, SwitchoverMode.SCALE_OUT, 3, pytest.approx(5 / 8))
    assert result.placement == {"r1": 2, "r2": 1, "r3": 1}


def test_tiered_switchover_moves_a_whole_replica(tiny):
    forecast, costs, spec = tiny
    result = plan(forecast, FleetState({"a": ClusterFleet(active=3)}), costs, spec,
                  PolicyConfig(mode=SwitchoverMode.TIERED))
    (decision,) = result.clusters["a"].switchovers
    assert decision.mode is SwitchoverMode.TIERED and decision.units == 6


def test_revert_when_the_spike_is_not_coming(tiny):
    forecast, costs, spec = tiny
    quiet = forecast_of(np.full((1, 8, 4), 12.0), ids=["a"])  # 1.2 units, certain
    result = plan(quiet, FleetState({"a": ClusterFleet(active=6)}), costs, spec)
    (decision,) = result.clusters["a"].switchovers
    assert decision.mode is SwitchoverMode.REVERT and decision.units == 4  # back to 2 units
    tiered = plan(quiet, FleetState({"a": ClusterFleet(active=6, standby=3)}), costs, spec)
    (back,) = tiered.clusters["a"].switchovers
    assert back.mode is SwitchoverMode.REVERT and back.units == 3
    calm = plan(quiet, FleetState({"a": ClusterFleet(active=2)}), costs, spec)
    assert calm.clusters["a"].switchovers == ()


# --- shared pools from joint paths ----------------------------------------------------------------


def test_shared_pool_is_strictly_smaller_when_spikes_are_independent():
    rng = np.random.default_rng(1)
    demand = rng.normal(100.0, 20.0, size=(4, 4000, 3))
    sizing = size_pools(demand, 0.5, 0.95, cold_lead=0)
    shared = shared_shadow_units(sizing, demand, 0.95, cold_lead=0)
    assert (shared < sizing.shadow.sum(axis=0)).all()
    assert (shared < 0.8 * sizing.shadow.sum(axis=0)).all()  # not a rounding artefact: pooling saves


def test_shared_pool_equals_the_sum_when_spikes_are_perfectly_correlated():
    rng = np.random.default_rng(2)
    common = rng.integers(0, 60, size=(4000, 3)).astype(float)
    demand = np.stack([40 + common, 10 + 2 * common, 25 + 3 * common])  # comonotone, integer units
    sizing = size_pools(demand, 0.5, 0.95, cold_lead=1)
    shared = shared_shadow_units(sizing, demand, 0.95, cold_lead=1)
    assert (shared == sizing.shadow.sum(axis=0)).all()
    np.testing.assert_allclose(shared_excess(demand, sizing.active, 0.95, 1), sizing.pool_excess.sum(axis=0))


def test_plan_reports_the_shared_pool():
    rng = np.random.default_rng(3)
    f = forecast_of(rng.normal(100.0, 20.0, size=(3, 2000, 4)))
    result = plan(f, FleetState(), CostModel(unserved_penalty=50.0), PoolSpec(capacity_per_unit=5.0),
                  PolicyConfig(shared_pool=True))
    separate = np.sum([c.shadow_units for c in result.clusters.values()], axis=0)
    assert len(result.shared_shadow_units) == 4
    assert (np.array(result.shared_shadow_units) < separate).all()
    assert sum(result.placement.values()) == result.shared_shadow_units[0]


# --- regions --------------------------------------------------------------------------------------


@given(st.integers(0, 500), st.integers(2, 6))
def test_region_resilient_total_survives_any_one_region_and_is_minimal(total, regions):
    n = int(region_resilient_total(np.array(total), regions))
    assert n - -(-n // regions) >= total
    assert total == 0 or (n - 1) - -(-(n - 1) // regions) < total


def test_resilient_plan_spreads_enough_shadows(tiny):
    forecast, costs, spec = tiny
    plain = plan(forecast, FleetState(), costs, spec).clusters["a"]
    safe = plan(forecast, FleetState(), costs, spec, PolicyConfig(region_resilient=True)).clusters["a"]
    totals = np.add(safe.active_units, safe.shadow_units)
    needed = np.add(plain.active_units, plain.shadow_units)
    assert (totals - -(-totals // 3) >= needed).all()
    assert spread(7, ("x", "y", "z")) == {"x": 3, "y": 2, "z": 2}


# --- quantiles and windows ------------------------------------------------------------------------


def test_inverted_cdf_quantile_and_tail_extension():
    sorted_values = np.array([10.0, 20.0, 30.0, 40.0])
    assert quantile_of_sorted(sorted_values, 0.5) == 20.0
    assert quantile_of_sorted(sorted_values, 0.51) == 30.0
    assert quantile_of_sorted(sorted_values, 0.875) == 40.0  # 1 - 1/(2S): the largest sample
    # Beyond it an exponential tail from the median (20) through the largest sample (40 at 0.875):
    # each factor 10 less in 1 - level adds the same distance, 20 · ln 10 / ln 8 = 22.15.
    beyond = [float(quantile_of_sorted(sorted_values, q)) for q in (0.9, 0.99, 0.9999)]
    assert beyond == pytest.approx([42.146, 64.292, 108.584], abs=1e-3)


def test_window_max_looks_forward_and_stops_at_the_horizon():
    x = np.array([[1.0, 5.0, 2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(window_max(x, 2), [[5.0, 5.0, 3.0, 3.0, 3.0]])
    np.testing.assert_array_equal(window_max(x, 0), x)


# --- properties -----------------------------------------------------------------------------------

samples_strategy = st.integers(1, 4).flatmap(lambda c: st.integers(1, 30).flatmap(
    lambda s: st.integers(1, 6).map(lambda h: (c, s, h))))


@settings(max_examples=60, deadline=None)
@given(samples_strategy, st.integers(0, 2**31 - 1), st.floats(0.0, 1.0), st.floats(0.01, 1000.0),
       st.floats(0.01, 1000.0))
def test_capacity_is_never_negative_and_more_penalty_never_means_less(shape, seed, warm, p1, p2):
    rng = np.random.default_rng(seed)
    samples = rng.gamma(1.0, 30.0, size=shape) * rng.integers(0, 2, size=shape)  # includes zeros
    low, high = sorted((p1, p2))
    spec = PoolSpec(capacity_per_unit=7.0, cold_provision_s=180.0, warm_activation_s=10.0)
    fleet = FleetState({"c0": ClusterFleet(active=int(rng.integers(0, 10)))})
    plans = [plan(forecast_of(samples), fleet, CostModel(1.0, warm, p), spec) for p in (low, high)]
    for cluster in plans[0].clusters:
        a_low, a_high = (np.array(p.clusters[cluster].active_units) for p in plans)
        s_low, s_high = (np.array(p.clusters[cluster].shadow_units) for p in plans)
        assert (a_low >= 0).all() and (s_low >= 0).all() and (s_high >= 0).all()
        assert (a_low <= a_high).all()
        assert (a_low + s_low <= a_high + s_high).all()


@settings(max_examples=60, deadline=None)
@given(samples_strategy, st.integers(0, 2**31 - 1), st.floats(0.5, 0.99999), st.integers(0, 3))
def test_shared_pool_never_exceeds_the_sum_of_separate_pools(shape, seed, level, lead):
    rng = np.random.default_rng(seed)
    demand = rng.pareto(1.5, size=shape) * 10  # heavy tails: where quantiles are not sub-additive
    sizing = size_pools(demand, 0.5, level, lead)
    shared = shared_shadow_units(sizing, demand, level, lead)
    assert (shared >= 0).all()
    assert (shared <= sizing.shadow.sum(axis=0)).all()


def test_empirical_quantile_agrees_with_numpy_inverted_cdf():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 101, 2))
    for q in (0.1, 0.5, 0.9):
        np.testing.assert_allclose(empirical_quantile(x, q), np.quantile(x, q, axis=1, method="inverted_cdf"))


def test_bad_policy_config_is_rejected():
    with pytest.raises(ValueError, match="active_level"):
        PolicyConfig(active_level=1.5)
    with pytest.raises(ValueError, match="mode"):
        PolicyConfig(mode=SwitchoverMode.REVERT)


@pytest.mark.parametrize("warm_s, cold_s, step_s, penalty, expected", [
    (5, 300, 60, 100.0, (1, 5)),  # 1/12 of a step late costs 100/12 > 0.7: pre-activate one step early
    (5, 300, 60, 5.0, (0, 5)),  # 5/12 < 0.7: activate in the step itself and lose 5 seconds of it
    (5, 300, 3600, 100.0, (0, 1)),  # hourly steps: a boot lands 5 minutes in; 100/12 > w = 0.3
    (5, 300, 3600, 2.0, (0, 0)),  # 2/12 < 0.3: order in the step itself
    (30, 120, 60, 1.6, (0, 2)),  # the hand-computed plan's pool: late by half a step, 0.8 is not > 0.8
])
def test_timing_leads_follow_the_price_of_being_late(warm_s, cold_s, step_s, penalty, expected):
    from allocator.policy import timing_leads

    spec = PoolSpec(cold_provision_s=cold_s, warm_activation_s=warm_s)
    leads = timing_leads(spec, step_s, CostModel(active_unit_cost=1.0, warm_fraction=0.3 if penalty != 1.6 else 0.2,
                                                 unserved_penalty=penalty))
    assert (leads.active, leads.pool) == expected


def test_a_kept_path_summary_plans_like_a_fresh_one_and_refuses_other_forecasts():
    rng = np.random.default_rng(3)
    ids = ["a", "b", "c"]
    forecast = Forecast.aligned(ids, pd.Timestamp("2025-01-01"), "min", rng.lognormal(3, 0.6, (3, 50, 12)))
    spec = PoolSpec(capacity_per_unit=10, cold_provision_s=290, warm_activation_s=5)
    costs, fleet = CostModel(unserved_penalty=100.0), FleetState({"a": ClusterFleet(active=2, standby=1)})
    summary = summarise_paths(forecast, spec, costs)
    assert summary.leads.active == 1  # an active lead: the unwindowed paths are kept sorted apart
    for config in (PolicyConfig(), PolicyConfig(active_level=0.6, pool_level=0.9), PolicyConfig(mode=SwitchoverMode.TIERED)):
        assert plan(forecast, fleet, costs, spec, config, summary=summary) == plan(forecast, fleet, costs, spec, config)

    same_values = Forecast.aligned(ids, pd.Timestamp("2025-01-01"), "min", forecast.samples.copy())
    wider_units = PoolSpec(capacity_per_unit=20, cold_provision_s=290, warm_activation_s=5)
    slower_boot = PoolSpec(capacity_per_unit=10, cold_provision_s=600, warm_activation_s=5)
    for other_forecast, other_spec in ((same_values, spec), (forecast, wider_units), (forecast, slower_boot)):
        with pytest.raises(ValueError, match="another forecast"):
            plan(other_forecast, fleet, costs, other_spec, summary=summary)

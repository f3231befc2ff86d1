"""The fleet model and the controllers on tiny traces whose outcome can be worked out by hand.

Steps are 60 s; a cold provision of 300 s takes 5 steps; a warm activation of 5 s loses 1/12 of
the step in which it happens. Decisions at step t see demand up to t - 1.
"""

import numpy as np
import pytest

from allocator.autoscalers import ForecastWindow, Hpa, HpaSettings, Observation, PredictivePoint, Static
from allocator.fleetsim import Delay, Fleet, Scenario, Targets
from allocator.oracle import oracle
from allocator.shadowing import Shadowcast
from allocator.types import CostModel, PoolSpec, SwitchoverMode

STEP = 60.0
COLD, WARM = Delay.of(300.0, STEP), Delay.of(5.0, STEP)
COSTS = CostModel(active_unit_cost=1.0, warm_fraction=0.3, unserved_penalty=100.0)
SPEC = PoolSpec(cold_provision_s=300.0, warm_activation_s=5.0)


def step_trace(low: float, high: float, rise: int = 10, length: int = 40) -> np.ndarray:
    demand = np.full((length, 1), low)
    demand[rise:] = high
    return demand


def play(controller, demand, forecasts=None, scenario=Scenario(), variants=1):
    """Replay `demand` ([steps, clusters], units) through one controller; the simulator's loop in miniature."""
    steps, clusters = demand.shape
    fleet = Fleet((variants, clusters), COLD, WARM, COSTS, STEP, scenario, controller.scale_in_to_warm)
    window = forecasts(0) if forecasts else None
    fleet.start(*controller.initial(demand[0], window))
    capacity, unserved, cost, warm = [], [], [], []
    last = demand[0]
    for t in range(steps):
        if forecasts:
            window = forecasts(t)
        fleet.disrupt(t)
        fleet.apply(t, controller.decide(Observation(t, last, window), fleet))
        out = fleet.serve(t, demand[t])
        controller.observe(t, demand[t])
        capacity.append(out.capacity)
        unserved.append(out.unserved)
        cost.append(out.cost)
        warm.append(fleet.warm + fleet.standby)
        last = demand[t]
    return np.array(capacity), np.array(unserved), np.array(cost), np.array(warm), fleet


def test_delays_split_into_whole_steps_and_a_fraction():
    assert (COLD.steps, COLD.lost_fraction) == (5, 0.0)
    assert (WARM.steps, WARM.lost_fraction) == (0, pytest.approx(1 / 12))
    assert Delay.of(90.0, STEP) == Delay(1, pytest.approx(0.5))


def test_reactive_with_a_cold_start_leaves_exactly_the_expected_unserved_demand():
    # 2 → 6 units at step 10, target 0.5: the fleet starts at 4; the HPA sees the rise at step 11
    # and asks for 8; they serve from step 16. Short 2 units for steps 10-15: 12 unit-steps.
    hpa = Hpa(1, STEP, (0.5,), settings=HpaSettings(sync_period_s=15.0))
    capacity, unserved, *_ = play(hpa, step_trace(2.0, 6.0))
    assert unserved.sum() == pytest.approx(12.0)
    assert capacity[9, 0, 0] == 4 and capacity[15, 0, 0] == 4 and capacity[16, 0, 0] == 8


def test_saturated_utilisation_slows_the_hpa_down():
    # 2 → 20 units: a saturated fleet reports 100 % utilisation, so each boot cycle grows it by
    # 1 / 0.5 at most: capacity 4 (steps 10-15), 8 (16-21), 16 (22-27), then 32.
    # Short 16·6 + 12·6 + 4·6 = 192 unit-steps; with an uncapped demand metric only 16·6.
    capacity, unserved, *_ = play(Hpa(1, STEP, (0.5,)), step_trace(2.0, 20.0))
    assert unserved.sum() == pytest.approx(192.0)
    assert [capacity[t, 0, 0] for t in (15, 16, 22, 28)] == [4, 8, 16, 32]
    _, unserved_demand_metric, *_ = play(Hpa(1, STEP, (0.5,), settings=HpaSettings(metric="demand")),
                                         step_trace(2.0, 20.0))
    assert unserved_demand_metric.sum() == pytest.approx(96.0)


def test_scale_down_waits_for_the_stabilisation_window():
    demand = step_trace(8.0, 2.0, rise=5, length=20)  # a drop at step 5
    capacity, *_ = play(Hpa(1, STEP, (0.5,)), demand)
    # Seen at step 6; the highest recommendation of the last five minutes stays 16 until step 10.
    assert capacity[9, 0, 0] == 16 and capacity[10, 0, 0] == 4


def test_a_warm_pool_absorbs_the_rise_one_step_later():
    # Same rise with 10 warm units: activated at step 11, they serve 11/12 of it.
    pool = Hpa(1, STEP, (0.5,), warm_pool=(10,))
    capacity, unserved, *_ = play(pool, step_trace(2.0, 6.0))
    assert unserved.sum() == pytest.approx(2.0)
    assert capacity[11, 0, 0] == pytest.approx(8 - 4 / 12)


def test_static_fleet_costs_its_size_and_replaces_failures():
    static = Static(np.array([3.0]), (1.0,))
    _, _, cost, _, _ = play(static, np.full((60, 1), 2.0))
    assert cost.sum() == pytest.approx(3.0)  # 3 units for one hour
    _, unserved, _, _, fleet = play(static, np.full((300, 1), 2.9), scenario=Scenario(failure_rate_per_hour=60.0, seed=1))
    assert unserved.sum() > 0  # units fail faster than they are replaced...
    assert fleet.total.sum() == 3  # ...but the fleet keeps asking for them back


def test_region_outage_removes_the_lost_regions_share_of_every_pool():
    static = Static(np.array([9.0]), (1.0,))
    capacity, unserved, *_ = play(static, np.full((20, 1), 8.0), scenario=Scenario(outage_step=3, regions=3))
    assert capacity[2, 0, 0] == 9 and capacity[3, 0, 0] == 6  # a third of 9 units lost
    assert capacity[8, 0, 0] == 9  # replaced after a cold start in the surviving regions
    assert unserved.sum() == pytest.approx(2.0 * 5)


def test_billing_counts_boots_as_active_and_warm_units_at_their_fraction():
    fleet = Fleet((1, 1), COLD, WARM, COSTS, STEP)
    fleet.start(np.array([[2]]), np.array([[4]]))
    fleet.apply(0, Targets(np.array([[2]]), np.array([[9]]), np.array([[9]])))  # order 3 more
    out = fleet.serve(0, np.array([1.0]))
    assert out.cost[0, 0] == pytest.approx((2 + 3 + 0.3 * 4) / 60)


def perfect(demand: np.ndarray, samples: int = 20):
    """A forecast equal to the truth, issued fresh at every step."""
    def window(t):
        future = demand[t:t + 30, 0]
        future = np.concatenate([future, np.full(30 - len(future), future[-1] if len(future) else demand[-1, 0])])
        return ForecastWindow.build(t, np.repeat(future[None, None, :], samples, axis=1), (0, 1, 5))
    return window


def test_shadowcast_switches_before_a_forecast_spike_and_serves_it_all():
    demand = step_trace(2.0, 6.0)
    shadow = Shadowcast(1, COSTS, (100.0,), spec=SPEC, step_s=STEP)
    capacity, unserved, _, warm, _ = play(shadow, demand, perfect(demand))
    assert unserved.sum() == pytest.approx(0.0)
    assert capacity[9, 0, 0] == pytest.approx(6 - 4 / 12)  # switched a step before the spike: 11/12 of it
    assert capacity[10, 0, 0] == 6
    assert warm[4, 0, 0] == 0 and warm[5, 0, 0] == 4  # shadows warm the cold lead time (5 steps) ahead
    assert shadow.events()["switchovers"].sum() == 1
    hpa_unserved = play(Hpa(1, STEP, (0.5,)), demand)[1].sum()
    assert hpa_unserved == pytest.approx(12.0)


def test_shadowcast_reverts_when_the_spike_does_not_come():
    demand = np.full((40, 1), 2.0)
    false_alarm = step_trace(2.0, 6.0, rise=10, length=40)
    def forecasts(t):  # predicts the rise until step 12, then sees it is not coming
        source = false_alarm if t < 12 else demand
        return perfect(source)(t)
    shadow = Shadowcast(1, COSTS, (100.0,), spec=SPEC, step_s=STEP, calibration=None)
    capacity, unserved, *_ = play(shadow, demand, forecasts)
    assert capacity[11, 0, 0] == 6 and capacity[12, 0, 0] == 2  # reverted as soon as the forecast changed
    assert shadow.events()["switchovers"].sum() == 1 and shadow.events()["reverts"].sum() == 1
    assert unserved.sum() == 0


def test_tiered_switchover_keeps_the_former_set_on_standby_and_brings_it_back():
    false_alarm = step_trace(2.0, 6.0, rise=10, length=40)
    demand = np.full((40, 1), 2.0)
    def forecasts(t):
        return perfect(false_alarm if t < 12 else demand)(t)
    shadow = Shadowcast(1, COSTS, (100.0,), spec=SPEC, step_s=STEP, calibration=None,
                        mode=SwitchoverMode.TIERED)
    capacity, unserved, _, warm, fleet = play(shadow, demand, forecasts)
    assert capacity[10, 0, 0] == 6 and capacity[11, 0, 0] == 6
    assert warm[10, 0, 0] == 2  # the former active set, on standby
    assert unserved.sum() == 0
    assert fleet.standby.sum() == 0 and capacity[-1, 0, 0] == 2  # reverted: the original set serves again


def test_predictive_point_prelaunches_for_the_forecast():
    demand = step_trace(2.0, 6.0)
    point = PredictivePoint(1, STEP, (0.5,), cold_lead=5)
    capacity, unserved, *_ = play(point, demand, perfect(demand))
    assert unserved.sum() == 0 and capacity[10, 0, 0] >= 12


def test_oracle_cost_by_hand():
    cold, warm = Delay.of(300.0, STEP), Delay.of(5.0, STEP)
    # Units 2 and 3 are needed at steps 2-3 only: each boots 5 steps ahead (billed) and serves 2 steps.
    result = oracle(np.array([[1.0], [1.0], [2.5], [3.0], [1.0], [0.2]]), COSTS, STEP, cold, warm)
    assert result.need[:, 0].tolist() == [1, 1, 3, 3, 1, 1]
    assert result.cost[0] == pytest.approx((6 + 2 * 2 + 2 * 5) / 60)
    # An idle spell of 2 steps is cheapest warm: 0.3 · 2 + 0.7 · 5/60 unit-steps.
    spell = oracle(np.array([[2.0], [1.0], [1.0], [2.0]]), COSTS, STEP, cold, warm)
    assert spell.cost[0] == pytest.approx((6 + 0.3 * 2 + 0.7 * 5 / 60) / 60)


def test_oracle_is_cheaper_than_every_controller_on_a_noisy_trace():
    rng = np.random.default_rng(0)
    demand = (10 + 5 * np.sin(np.arange(300) / 20) + rng.gamma(2, 1, 300))[:, None]
    best = oracle(demand, COSTS, STEP, COLD, WARM).cost.sum()
    for controller, f in ((Hpa(1, STEP, (0.7,)), None), (Shadowcast(1, COSTS, (100.0,), SPEC, STEP), perfect(demand))):
        _, unserved, cost, *_ = play(controller, demand, f)
        assert cost.sum() > best


def test_region_resilient_shadows_ride_out_the_loss_of_a_region():
    # Flat demand of 9 units known exactly, 3 regions, region lost at step 10.
    demand = np.full((30, 1), 9.0)
    outage = Scenario(outage_step=10, regions=3)
    plain = Shadowcast(1, COSTS, (100.0,), spec=SPEC, step_s=STEP, regions=3)
    _, unserved, *_ = play(plain, demand, perfect(demand), scenario=outage)
    assert unserved.sum() == pytest.approx(3 * 5)  # a third of the active set, until replacements boot
    resilient = Shadowcast(1, COSTS, (100.0,), spec=SPEC, step_s=STEP, regions=3, region_resilient=True)
    _, unserved, _, warm, _ = play(resilient, demand, perfect(demand), scenario=outage)
    assert warm[9, 0, 0] == 14 - 9  # 9 + ceil(9 / 2): any two regions still hold 9
    assert unserved.sum() == pytest.approx(3 / 12)  # surviving shadows take over within seconds

"""Switchovers on real worker processes behind a real HAProxy, under steady load from another process."""

from __future__ import annotations

import time

import pytest

from allocator.controller import Controller
from allocator.drivers.local import LocalDriver, http_json
from allocator.store import Store
from allocator.types import PoolSpec, ResourceState, SwitchoverKind, SwitchoverPhase
from tests.runtime.conftest import ROUTE

SPEC = PoolSpec(name="web-pool", cold_provision_s=5, warm_activation_s=0.1)


def _open(controller: Controller) -> tuple[str, str]:
    """An active unit on the route and a warm shadow."""
    a = controller.provision(SPEC, cluster_id=ROUTE)
    controller.open_route(ROUTE, a.id)
    return a.id, controller.provision(SPEC, cluster_id=ROUTE).id


def _switch_back_and_forth(controller: Controller, driver: LocalDriver, pair: tuple[str, str], count: int,
                           pause_s: float) -> list[float]:
    """Alternate switchover (shadow takes over) and revert (standby takes back); returns ms each."""
    active, other = pair
    took = []
    time.sleep(pause_s)
    for i in range(count):
        kind = SwitchoverKind.SWITCHOVER if i % 2 == 0 else SwitchoverKind.REVERT
        started = time.perf_counter()
        sw = controller.switch(f"sw-{i}", ROUTE, active, other, kind)
        took.append((time.perf_counter() - started) * 1e3)
        assert sw.phase is SwitchoverPhase.COMMITTED, sw
        active, other = other, active
        assert driver.route_members(ROUTE) == (active,)
        assert driver.get(active).state is ResourceState.ACTIVE
        time.sleep(pause_s)
    return took


def _assert_clean(report: dict, min_rate: float) -> None:
    assert report["failed"] == 0, report["errors"]
    assert report["state_errors"] == 0, report["errors"]
    assert report["final_mismatches"] == [], report["final_mismatches"][:5]
    assert report["rate"] >= min_rate, report


def test_switchovers_under_load_lose_nothing(local_driver: LocalDriver, sqlite_store: Store, loadgen) -> None:
    controller = Controller(local_driver, sqlite_store)
    pair = _open(controller)
    gen = loadgen(local_driver.route_url(ROUTE), rate=300, duration=30, sessions=24, threads=6)
    try:
        took = _switch_back_and_forth(controller, local_driver, pair, count=4, pause_s=0.4)
    finally:
        report = gen.finish()
    _assert_clean(report, min_rate=250)
    assert len(report["served_by"]) == 2  # both workers took traffic in turn
    assert max(took) < 1000, took


@pytest.mark.slow
def test_twenty_switchovers_at_300_requests_per_second(local_driver: LocalDriver, sqlite_store: Store,
                                                       loadgen) -> None:
    controller = Controller(local_driver, sqlite_store)
    pair = _open(controller)
    gen = loadgen(local_driver.route_url(ROUTE), rate=360, duration=60, sessions=40, threads=8)
    try:
        took = _switch_back_and_forth(controller, local_driver, pair, count=20, pause_s=0.25)
    finally:
        report = gen.finish()
    print(f"load: {report['requests']} requests at {report['rate']}/s; switchover ms: "
          f"p50={sorted(took)[len(took) // 2]:.1f} max={max(took):.1f}")
    _assert_clean(report, min_rate=300)
    assert len(sqlite_store.switchovers()) == 20


def test_reconcile_drives_real_processes_to_the_plan(local_driver: LocalDriver, sqlite_store: Store) -> None:
    from allocator.types import ClusterPlan, Plan, SwitchoverDecision, SwitchoverMode

    controller = Controller(local_driver, sqlite_store)
    tiered = SwitchoverDecision(ROUTE, step=0, mode=SwitchoverMode.TIERED, units=1, probability=0.95)
    plan = Plan({ROUTE: ClusterPlan(ROUTE, active_units=(1,), shadow_units=(1,), quantile_level=0.9)})
    while controller.reconcile(plan, SPEC, plan_id="p1") is not None:
        pass
    first = controller.active(ROUTE)
    for _ in range(3):
        http_json("POST", local_driver.route_url(ROUTE), "/s/s1/incr")
    spike = Plan({ROUTE: ClusterPlan(ROUTE, active_units=(1,), shadow_units=(1,), quantile_level=0.9,
                                     switchovers=(tiered,))})
    steps = []
    while (step := controller.reconcile(spike, SPEC, plan_id="p2")) is not None:
        steps.append(step.action)
    assert steps == ["switchover", "provision-shadow"]
    now = controller.active(ROUTE)
    assert now.id != first.id and local_driver.get(first.id).state is ResourceState.STANDBY
    status, body = http_json("POST", local_driver.route_url(ROUTE), "/s/s1/incr")
    assert (status, body["served_by"], body["counter"]) == (200, now.id, 4)
    assert controller.fleet()[ROUTE] == {ResourceState.ACTIVE: 1, ResourceState.STANDBY: 1, ResourceState.WARM: 1}

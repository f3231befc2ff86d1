"""The health monitor on real workers: failing units are found and replaced, actives failed over."""

from __future__ import annotations

import time

from allocator.controller import Controller
from allocator.drivers.local import LocalDriver, http_json
from allocator.health import HealthMonitor
from allocator.store import Store
from allocator.types import PoolSpec, ResourceState, SwitchoverKind, SwitchoverPhase
from tests.drivers.local_harness import runtime_processes
from tests.runtime.conftest import ROUTE

SPEC = PoolSpec(name="web-pool", cold_provision_s=5, warm_activation_s=0.1)
INTERVAL = 1.0  # s; a replacement (a worker started from nothing) must fit in the third interval


def _fail_probes(driver: LocalDriver, resource_id: str) -> None:
    status, _ = http_json("POST", driver.get(resource_id).endpoint, "/admin/fault", {"fail_probes": True})
    assert status == 200


def _wait_for(predicate, timeout: float) -> float:  # noqa: ANN001
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s")


def test_a_shadow_failing_probes_is_replaced_within_three_intervals(local_driver: LocalDriver,
                                                                   sqlite_store: Store) -> None:
    controller = Controller(local_driver, sqlite_store)
    a = controller.provision(SPEC, cluster_id=ROUTE)
    controller.open_route(ROUTE, a.id)
    shadow = controller.provision(SPEC, cluster_id=ROUTE)
    http_json("POST", local_driver.route_url(ROUTE), "/s/s1/incr")
    monitor = HealthMonitor(controller, SPEC, interval_s=INTERVAL, failure_threshold=2)
    monitor.start()
    try:
        _wait_for(lambda: shadow.id in monitor.health(), 3 * INTERVAL)
        assert monitor.health()[shadow.id].ok
        _fail_probes(local_driver, shadow.id)
        took = _wait_for(lambda: any(x.action == "replaced-shadow" for x in monitor.actions), 3 * INTERVAL)
    finally:
        monitor.stop()
    (action,) = monitor.actions
    assert action.resource_id == shadow.id and took <= 3 * INTERVAL
    replacement = local_driver.get(action.replacement_id)
    assert replacement.state is ResourceState.WARM and local_driver.probe(replacement).ok
    assert local_driver.get(shadow.id).state is ResourceState.RELEASED
    assert sqlite_store.get_resource(shadow.id).state is ResourceState.RELEASED
    # The replacement is state-loaded, and the failing process is gone, not orphaned.
    status, snap = http_json("GET", replacement.endpoint, "/admin/snapshot?since=0")
    assert snap["sessions"]["s1"]["counter"] == 1
    assert sorted(runtime_processes(local_driver.runtime_dir)) == sorted(
        local_driver.pid(r) for r in (a.id, replacement.id))


def test_an_active_failing_probes_is_failed_over_to_a_warm_shadow(local_driver: LocalDriver,
                                                                  sqlite_store: Store) -> None:
    controller = Controller(local_driver, sqlite_store)
    a = controller.provision(SPEC, cluster_id=ROUTE)
    controller.open_route(ROUTE, a.id)
    shadow = controller.provision(SPEC, cluster_id=ROUTE)
    for _ in range(3):
        http_json("POST", local_driver.route_url(ROUTE), "/s/s1/incr")
    monitor = HealthMonitor(controller, SPEC, interval_s=INTERVAL, failure_threshold=2)
    _fail_probes(local_driver, a.id)
    assert monitor.probe_once() == [] and not monitor.health()[a.id].ok  # one failure is not an outage
    (action,) = monitor.probe_once()
    assert (action.action, action.resource_id, action.replacement_id) == ("failed-over", a.id, shadow.id)
    sw = sqlite_store.get_switchover(f"failover/{a.id}")
    assert (sw.kind, sw.phase) == (SwitchoverKind.FAILOVER, SwitchoverPhase.COMMITTED)
    assert local_driver.route_members(ROUTE) == (shadow.id,)
    assert local_driver.get(a.id).state is ResourceState.RELEASED
    status, body = http_json("POST", local_driver.route_url(ROUTE), "/s/s1/incr")
    assert (status, body["served_by"], body["counter"]) == (200, shadow.id, 4)  # the handoff carried the session

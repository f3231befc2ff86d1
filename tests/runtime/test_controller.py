"""The switchover state machine on the simulated driver, with the store on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from allocator.controller import Controller, InjectedControllerFault, SwitchoverFailed, SwitchoverRejected
from allocator.drivers.simulated import SimulatedDriver
from allocator.notify import Notifier
from allocator.store import ResourceBusyError, Store
from allocator.types import (
    ClusterPlan,
    Plan,
    PoolSpec,
    ResourceState,
    SwitchoverDecision,
    SwitchoverKind,
    SwitchoverMode,
    SwitchoverPhase,
)

ROUTE = "web"
SPEC = PoolSpec(name="web-pool", cold_provision_s=60, warm_activation_s=1)
PHASES = [SwitchoverPhase.SYNCING, SwitchoverPhase.NOTIFYING, SwitchoverPhase.REDIRECTING]


class Crash(BaseException):
    """Stands in for a SIGKILL inside one process: nothing after it runs, no rollback either."""


@pytest.fixture
def driver() -> SimulatedDriver:
    return SimulatedDriver(routes=(ROUTE,))


def _setup(driver: SimulatedDriver, store: Store, **kwargs) -> tuple[Controller, str, str]:
    controller = Controller(driver, store, **kwargs)
    a = controller.provision(SPEC, cluster_id=ROUTE)
    controller.open_route(ROUTE, a.id)
    b = controller.provision(SPEC, cluster_id=ROUTE)
    for _ in range(3):
        driver.request(ROUTE, "s1")
    return controller, a.id, b.id


def _snapshot(driver: SimulatedDriver, store: Store) -> tuple:
    return ({r.id: r.state for r in driver.list()}, driver.route_members(ROUTE),
            [(s.id, s.phase) for s in store.switchovers()], len(store.journal()))


def test_a_switchover_commits_and_journals_every_step(driver: SimulatedDriver, store: Store) -> None:
    notifier = Notifier()
    subscription = notifier.sse.subscribe()
    seen_at_notice: list[tuple[str, ...]] = []

    def hook(when: str, phase: SwitchoverPhase, sw) -> None:  # noqa: ANN001
        if (when, phase) == ("after", SwitchoverPhase.NOTIFYING):
            seen_at_notice.append(driver.route_members(ROUTE))

    # The SSE stream "writes" whatever is queued, as a client connection would.
    import threading

    def drain() -> None:
        for frame in subscription.stream(keepalive_s=0.05):
            if frame.startswith(b"id:"):
                subscription.mark_written(notifier.sse)

    threading.Thread(target=drain, daemon=True).start()
    controller, a, b = _setup(driver, store, notifier=notifier, hook=hook)
    sw = controller.switch("sw-1", ROUTE, a, b)
    assert sw.phase is SwitchoverPhase.COMMITTED
    assert (driver.get(a).state, driver.get(b).state) == (ResourceState.STANDBY, ResourceState.ACTIVE)
    assert driver.route_members(ROUTE) == (b,) and driver.request(ROUTE, "s1") == 4
    assert seen_at_notice == [(a,)]  # clients were told while traffic was still on the old active
    phases = [e.phase for e in store.journal("sw-1")]
    assert [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p] == [
        SwitchoverPhase.PLANNED, *PHASES, SwitchoverPhase.COMMITTED]
    assert (store.get_resource(a).state, store.get_resource(b).state) == (ResourceState.STANDBY, ResourceState.ACTIVE)
    notifier.sse.unsubscribe(subscription)
    notifier.close()


def test_a_repeated_request_is_answered_from_the_journal(driver: SimulatedDriver, store: Store) -> None:
    controller, a, b = _setup(driver, store)
    first = controller.switch("sw-1", ROUTE, a, b)
    calls = list(driver.calls)
    assert controller.switch("sw-1", ROUTE, a, b) == first
    assert driver.calls == calls  # nothing was done twice
    with pytest.raises(SwitchoverRejected, match="already used"):
        controller.switch("sw-1", ROUTE, b, a)


@pytest.mark.parametrize("operation", ["sync", "redirect", "set_state"])
def test_a_driver_failure_rolls_back(driver: SimulatedDriver, store: Store, operation: str) -> None:
    controller, a, b = _setup(driver, store)
    driver.fail_next(operation)
    with pytest.raises(SwitchoverFailed) as failed:
        controller.switch("sw-1", ROUTE, a, b)
    assert failed.value.switchover.phase is SwitchoverPhase.ROLLED_BACK
    assert "injected fault" in store.get_switchover("sw-1").error
    assert (driver.get(a).state, driver.get(b).state) == (ResourceState.ACTIVE, ResourceState.WARM)
    assert driver.route_members(ROUTE) == (a,) and driver.request(ROUTE, "s1") == 4
    # The resources are free again: a new switchover goes through.
    assert controller.switch("sw-2", ROUTE, a, b).phase is SwitchoverPhase.COMMITTED


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("phase", PHASES)
def test_a_failure_at_any_step_rolls_back(driver: SimulatedDriver, store: Store, when: str,
                                          phase: SwitchoverPhase) -> None:
    def hook(at: str, current: SwitchoverPhase, sw) -> None:  # noqa: ANN001
        if (at, current) == (when, phase):
            raise InjectedControllerFault(f"{at} {current}")

    controller, a, b = _setup(driver, store, hook=hook)
    with pytest.raises(SwitchoverFailed):
        controller.switch("sw-1", ROUTE, a, b)
    assert store.get_switchover("sw-1").phase is SwitchoverPhase.ROLLED_BACK
    assert (driver.get(a).state, driver.get(b).state) == (ResourceState.ACTIVE, ResourceState.WARM)
    assert driver.route_members(ROUTE) == (a,) and driver.request(ROUTE, "s1") == 4


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("phase", PHASES)
def test_a_restarted_controller_finishes_what_a_crash_left(driver: SimulatedDriver, store: Store, when: str,
                                                           phase: SwitchoverPhase) -> None:
    def crash(at: str, current: SwitchoverPhase, sw) -> None:  # noqa: ANN001
        if (at, current) == (when, phase):
            raise Crash()

    controller, a, b = _setup(driver, store, hook=crash)
    lease_holder = controller.store.locks
    with pytest.raises(Crash):
        controller.switch("sw-1", ROUTE, a, b)
    assert not store.get_switchover("sw-1").phase.finished
    del lease_holder
    restarted = Controller(driver, store, hook=lambda *_: None)
    (done,) = restarted.resume()
    expected = SwitchoverPhase.COMMITTED if phase is SwitchoverPhase.REDIRECTING else SwitchoverPhase.ROLLED_BACK
    assert done.phase is expected
    active = b if expected is SwitchoverPhase.COMMITTED else a
    states = {r.id: r.state for r in driver.list()}
    assert states[active] is ResourceState.ACTIVE and list(states.values()).count(ResourceState.ACTIVE) == 1
    assert driver.route_members(ROUTE) == (active,) and driver.request(ROUTE, "s1") == 4
    assert restarted.resume() == []


def test_bad_requests_are_refused_and_change_nothing(driver: SimulatedDriver, store: Store) -> None:
    controller, a, b = _setup(driver, store)
    cold = driver.provision(SPEC, warm=False, cluster_id=ROUTE).id
    failed = driver.provision(SPEC, warm=True, cluster_id=ROUTE).id
    driver.set_state(driver.get(failed), ResourceState.FAILED)
    sick = driver.provision(SPEC, warm=True, cluster_id=ROUTE).id
    driver.fail_probes(sick)
    other_cluster = driver.provision(SPEC, warm=True, cluster_id="elsewhere").id
    spare = driver.provision(SPEC, warm=True, cluster_id=ROUTE).id
    before = _snapshot(driver, store)
    cases = {
        "unknown resource": ("x1", ROUTE, a, "no-such-unit", "unknown resource 'no-such-unit'"),
        "unknown source": ("x2", ROUTE, "no-such-unit", b, "unknown resource 'no-such-unit'"),
        "cold target": ("x3", ROUTE, a, cold, "is cold; a switchover needs a warm target"),
        "failed target": ("x4", ROUTE, a, failed, "is failed; a switchover needs a warm target"),
        "target failing probes": ("x5", ROUTE, a, sick, "fails its health probe"),
        "source not active": ("x6", ROUTE, spare, b, "is warm, not active"),
        "same resource": ("x7", ROUTE, a, a, "same resource"),
        "unknown route": ("x8", "nowhere", a, b, "unknown route 'nowhere'"),
        "other cluster": ("x9", ROUTE, a, other_cluster, "serves cluster"),
    }
    for name, (sid, route, source, target, message) in cases.items():
        with pytest.raises(SwitchoverRejected, match=message):
            controller.switch(sid, route, source, target)
    assert _snapshot(driver, store) == before


def test_a_second_switchover_on_a_busy_resource_is_refused(driver: SimulatedDriver, store: Store) -> None:
    controller, a, b = _setup(driver, store)
    c = controller.provision(SPEC, cluster_id=ROUTE).id
    before = _snapshot(driver, store)
    with store.locks.acquire((b,)):  # a first switchover holds the shadow
        with pytest.raises(ResourceBusyError, match=b):
            controller.switch("sw-2", ROUTE, a, b)
    assert _snapshot(driver, store) == before

    def crash(at: str, phase: SwitchoverPhase, sw) -> None:  # noqa: ANN001
        if (at, phase) == ("before", SwitchoverPhase.NOTIFYING):
            raise Crash()

    with pytest.raises(Crash):
        Controller(driver, store, hook=crash).switch("sw-3", ROUTE, a, b)
    # sw-3 is unfinished on a and b: another move of the same active is refused until resumed.
    with pytest.raises(ResourceBusyError, match="sw-3"):
        controller.switch("sw-4", ROUTE, a, c)
    controller.resume()
    assert controller.switch("sw-4", ROUTE, a, c).phase is SwitchoverPhase.COMMITTED


def test_revert_brings_the_standby_back(driver: SimulatedDriver, store: Store) -> None:
    controller, a, b = _setup(driver, store)
    controller.switch("sw-1", ROUTE, a, b)
    driver.request(ROUTE, "s1")
    sw = controller.switch("rv-1", ROUTE, b, a, SwitchoverKind.REVERT)
    assert sw.phase is SwitchoverPhase.COMMITTED
    assert (driver.get(a).state, driver.get(b).state) == (ResourceState.ACTIVE, ResourceState.WARM)
    assert driver.route_members(ROUTE) == (a,) and driver.request(ROUTE, "s1") == 5


def test_failover_from_a_dead_active(driver: SimulatedDriver, store: Store) -> None:
    controller, a, b = _setup(driver, store)
    controller.refresh_shadows(ROUTE)
    driver.kill(a)
    sw = controller.switch("fo-1", ROUTE, a, b, SwitchoverKind.FAILOVER)
    assert sw.phase is SwitchoverPhase.COMMITTED
    assert (driver.get(a).state, driver.get(b).state) == (ResourceState.FAILED, ResourceState.ACTIVE)
    assert driver.request(ROUTE, "s1") == 4  # the background sync had carried the session


def test_reconcile_converges_one_idempotent_step_at_a_time(driver: SimulatedDriver, store: Store) -> None:
    controller = Controller(driver, store)
    decision = SwitchoverDecision(ROUTE, step=0, mode=SwitchoverMode.TIERED, units=1, probability=0.9)
    plan = Plan({ROUTE: ClusterPlan(ROUTE, active_units=(1,), shadow_units=(2,), quantile_level=0.9,
                                    switchovers=(decision,))})
    steps = []
    while (step := controller.reconcile(plan, SPEC, plan_id="p1")) is not None:
        steps.append(step.action)
        assert len(steps) < 10
    assert steps == ["provision-shadow", "open-route", "provision-shadow", "switchover", "provision-shadow",
                     "provision-shadow"]
    counts = controller.fleet()[ROUTE]
    assert counts == {ResourceState.ACTIVE: 1, ResourceState.STANDBY: 1, ResourceState.WARM: 2}
    assert controller.reconcile(plan, SPEC, plan_id="p1") is None  # same plan again: nothing to do
    assert len(store.switchovers()) == 1

    fewer = Plan({ROUTE: ClusterPlan(ROUTE, active_units=(1,), shadow_units=(1,), quantile_level=0.9)})
    assert controller.reconcile(fewer, SPEC, plan_id="p2").action == "release-shadow"
    assert controller.reconcile(fewer, SPEC, plan_id="p2") is None
    assert controller.fleet()[ROUTE][ResourceState.WARM] == 1

"""The contract every `ResourceDriver` passes. A driver's test module subclasses `DriverContract`
and provides two fixtures: `driver` (a fresh driver with the route "web") and `harness` (a
`Harness` that sends traffic and reads state the platform's own way)."""

from __future__ import annotations

from typing import Protocol

import pytest

from allocator.drivers.base import (
    ConflictError,
    InvalidTransitionError,
    ResourceDriver,
    ResourceNotReadyError,
    RouteStateError,
    UnknownResourceError,
    UnknownRouteError,
)
from allocator.types import PoolSpec, Resource, ResourceState

ROUTE = "web"
SPEC = PoolSpec(name="web-pool", cold_provision_s=30, warm_activation_s=1, regions=("r1", "r2"))


class Harness(Protocol):
    def incr(self, route: str, session: str) -> int:
        """One request through the route; the session's counter after it."""

    def counter(self, resource: Resource, session: str) -> int | None:
        """The session's counter as held by one resource (None: it does not hold the session)."""

    def kill(self, resource: Resource) -> None:
        """The unit stops answering, as a crash would."""


def _ghost(state: ResourceState = ResourceState.WARM) -> Resource:
    return Resource(id="no-such-resource", cluster_id="c", pool=SPEC.name, region="r1", state=state)


class DriverContract:
    # --- provision -----------------------------------------------------------------------------------

    def test_provision_warm_is_healthy_and_listed(self, driver: ResourceDriver) -> None:
        resource = driver.provision(SPEC, warm=True, cluster_id="c1", region="r2")
        assert (resource.state, resource.cluster_id, resource.pool, resource.region) == (
            ResourceState.WARM, "c1", SPEC.name, "r2")
        assert driver.probe(resource).ok
        assert [r.id for r in driver.list("c1")] == [resource.id]
        assert driver.list("other") == []
        assert driver.get(resource.id) == resource

    def test_provision_cold_then_warm(self, driver: ResourceDriver) -> None:
        resource = driver.provision(SPEC, warm=False, cluster_id="c1")
        assert resource.state is ResourceState.COLD
        warm = driver.set_state(resource, ResourceState.WARM)
        assert warm.state is ResourceState.WARM and driver.get(resource.id).state is ResourceState.WARM
        assert driver.probe(warm).ok

    def test_provision_is_idempotent_by_id(self, driver: ResourceDriver) -> None:
        first = driver.provision(SPEC, warm=True, cluster_id="c1", resource_id="unit-1")
        again = driver.provision(SPEC, warm=True, cluster_id="c1", resource_id="unit-1")
        assert again == first and len(driver.list()) == 1
        with pytest.raises(ConflictError, match="unit-1"):
            driver.provision(PoolSpec(name="other-pool"), warm=True, cluster_id="c1", resource_id="unit-1")
        assert len(driver.list()) == 1 and driver.get("unit-1") == first

    def test_provision_rejects_a_region_outside_the_pool(self, driver: ResourceDriver) -> None:
        with pytest.raises(ValueError, match="region"):
            driver.provision(SPEC, warm=True, region="mars")
        assert driver.list() == []

    # --- redirect and sync ---------------------------------------------------------------------------

    def test_open_route_and_serve(self, driver: ResourceDriver, harness: Harness) -> None:
        a = driver.provision(SPEC, warm=True)
        driver.redirect(ROUTE, None, a)
        assert driver.route_members(ROUTE) == (a.id,)
        assert [harness.incr(ROUTE, "s1") for _ in range(3)] == [1, 2, 3]
        assert harness.counter(a, "s1") == 3

    def test_sync_copies_sessions_and_repeats_harmlessly(self, driver: ResourceDriver, harness: Harness) -> None:
        a, b = self._pair(driver)
        for session in ("s1", "s2"):
            harness.incr(ROUTE, session)
        harness.incr(ROUTE, "s1")
        assert driver.sync(a, b) == 2
        assert (harness.counter(b, "s1"), harness.counter(b, "s2")) == (2, 1)
        assert driver.sync(a, b) == 0  # nothing changed since
        harness.incr(ROUTE, "s2")
        assert driver.sync(a, b) == 1 and harness.counter(b, "s2") == 2

    def test_prepare_sync_probes_changes_nothing_and_the_sync_after_it_misses_nothing(
            self, driver: ResourceDriver, harness: Harness) -> None:
        a, b = self._pair(driver)
        harness.incr(ROUTE, "s1")
        health = driver.prepare_sync(a, b)
        assert health.ok and health.resource_id == b.id
        assert harness.counter(b, "s1") is None  # nothing copied yet
        harness.incr(ROUTE, "s1")  # after whatever the driver read ahead
        harness.incr(ROUTE, "s2")
        driver.sync(a, b)  # copies at least what was there at prepare_sync
        assert harness.counter(b, "s1") in (1, 2)
        driver.sync(a, b)  # and the next sync (or a redirect's catch-up) the rest
        assert (harness.counter(b, "s1"), harness.counter(b, "s2")) == (2, 1)
        harness.incr(ROUTE, "s1")
        assert driver.prepare_sync(a, b).ok
        driver.redirect(ROUTE, a, b)
        assert harness.incr(ROUTE, "s1") == 4 and harness.counter(b, "s1") == 4
        harness.kill(b)
        dead = driver.prepare_sync(a, b)
        assert not dead.ok and dead.resource_id == b.id and dead.detail

    def test_redirect_moves_traffic_and_every_write(self, driver: ResourceDriver, harness: Harness) -> None:
        a, b = self._pair(driver)
        harness.incr(ROUTE, "s1")
        driver.sync(a, b)
        harness.incr(ROUTE, "s1")  # after the sync: only the redirect's catch-up can carry it
        driver.redirect(ROUTE, a, b)
        assert driver.route_members(ROUTE) == (b.id,)
        assert harness.incr(ROUTE, "s1") == 3
        assert harness.counter(b, "s1") == 3
        # States are the caller's business: a redirect changes none.
        assert (driver.get(a.id).state, driver.get(b.id).state) == (ResourceState.ACTIVE, ResourceState.WARM)

    def test_redirect_is_idempotent_and_can_go_back(self, driver: ResourceDriver, harness: Harness) -> None:
        a, b = self._pair(driver)
        harness.incr(ROUTE, "s1")
        driver.redirect(ROUTE, a, b)
        driver.redirect(ROUTE, a, b)
        assert driver.route_members(ROUTE) == (b.id,)
        driver.redirect(ROUTE, b, a)
        assert driver.route_members(ROUTE) == (a.id,)
        assert harness.incr(ROUTE, "s1") == 2

    @pytest.mark.parametrize("bad", [ResourceState.COLD, ResourceState.FAILED, ResourceState.RELEASED])
    def test_redirect_refuses_a_target_that_cannot_serve(self, driver: ResourceDriver, harness: Harness,
                                                         bad: ResourceState) -> None:
        a = self._active(driver)
        target = driver.provision(SPEC, warm=bad is not ResourceState.COLD)
        if bad is ResourceState.FAILED:
            target = driver.set_state(target, ResourceState.FAILED)
        elif bad is ResourceState.RELEASED:
            driver.release(target)
            target = driver.get(target.id)
        assert target.state is bad
        with pytest.raises(ResourceNotReadyError, match=target.id):
            driver.redirect(ROUTE, a, target)
        assert driver.route_members(ROUTE) == (a.id,)
        assert driver.get(target.id).state is bad and driver.get(a.id).state is ResourceState.ACTIVE
        assert harness.incr(ROUTE, "s1") == 1

    def test_redirect_from_a_non_member_is_refused(self, driver: ResourceDriver) -> None:
        a, b = self._pair(driver)
        c = driver.provision(SPEC, warm=True)
        with pytest.raises(RouteStateError, match=c.id):
            driver.redirect(ROUTE, c, b)
        assert driver.route_members(ROUTE) == (a.id,)

    def test_detach(self, driver: ResourceDriver) -> None:
        a = self._active(driver)
        b = driver.provision(SPEC, warm=True)
        driver.redirect(ROUTE, None, b)
        assert set(driver.route_members(ROUTE)) == {a.id, b.id}
        driver.detach(ROUTE, b)
        driver.detach(ROUTE, b)
        assert driver.route_members(ROUTE) == (a.id,)

    # --- states --------------------------------------------------------------------------------------

    def test_set_state_follows_the_lifecycle(self, driver: ResourceDriver) -> None:
        a = driver.provision(SPEC, warm=True)
        for state in (ResourceState.ACTIVE, ResourceState.STANDBY, ResourceState.ACTIVE, ResourceState.WARM):
            assert driver.set_state(a, state).state is state
        assert driver.set_state(a, ResourceState.WARM).state is ResourceState.WARM  # same state: no-op
        driver.set_state(a, ResourceState.FAILED)
        with pytest.raises(InvalidTransitionError, match="failed to active"):
            driver.set_state(a, ResourceState.ACTIVE)
        assert driver.get(a.id).state is ResourceState.FAILED

    def test_cold_cannot_skip_warm(self, driver: ResourceDriver) -> None:
        a = driver.provision(SPEC, warm=False)
        with pytest.raises(InvalidTransitionError):
            driver.set_state(a, ResourceState.ACTIVE)
        assert driver.get(a.id).state is ResourceState.COLD

    # --- probe and release ---------------------------------------------------------------------------

    def test_probe_reports_a_dead_unit_without_raising(self, driver: ResourceDriver, harness: Harness) -> None:
        a = driver.provision(SPEC, warm=True)
        harness.kill(a)
        health = driver.probe(a)
        assert not health.ok and health.resource_id == a.id and health.detail

    def test_release_is_final_and_idempotent(self, driver: ResourceDriver, harness: Harness) -> None:
        a, b = self._pair(driver)
        driver.release(b)
        driver.release(b)
        assert driver.get(b.id).state is ResourceState.RELEASED
        assert [r.id for r in driver.list()] == [a.id]
        assert not driver.probe(b).ok
        with pytest.raises(ResourceNotReadyError):
            driver.sync(a, b)
        with pytest.raises(InvalidTransitionError):
            driver.set_state(b, ResourceState.WARM)
        driver.release(a)  # releasing the active takes it out of its route too
        assert driver.route_members(ROUTE) == ()

    # --- bad input -----------------------------------------------------------------------------------

    def test_unknown_resources_are_refused_by_every_call(self, driver: ResourceDriver) -> None:
        a = self._active(driver)
        ghost = _ghost()
        calls = {
            "get": lambda: driver.get(ghost.id),
            "probe": lambda: driver.probe(ghost),
            "set_state": lambda: driver.set_state(ghost, ResourceState.ACTIVE),
            "release": lambda: driver.release(ghost),
            "sync from": lambda: driver.sync(ghost, a),
            "sync to": lambda: driver.sync(a, ghost),
            "prepare_sync from": lambda: driver.prepare_sync(ghost, a),
            "prepare_sync to": lambda: driver.prepare_sync(a, ghost),
            "redirect to": lambda: driver.redirect(ROUTE, a, ghost),
            "redirect from": lambda: driver.redirect(ROUTE, ghost, a),
            "detach": lambda: driver.detach(ROUTE, ghost),
        }
        for name, call in calls.items():
            with pytest.raises(UnknownResourceError, match="no-such-resource"):
                call()
        assert driver.route_members(ROUTE) == (a.id,) and [r.id for r in driver.list()] == [a.id]

    def test_unknown_routes_are_refused(self, driver: ResourceDriver) -> None:
        a = driver.provision(SPEC, warm=True)
        with pytest.raises(UnknownRouteError, match="nowhere"):
            driver.redirect("nowhere", None, a)
        with pytest.raises(UnknownRouteError):
            driver.route_members("nowhere")
        assert driver.route_members(ROUTE) == ()

    # --- helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _active(driver: ResourceDriver) -> Resource:
        a = driver.provision(SPEC, warm=True)
        driver.redirect(ROUTE, None, a)
        return driver.set_state(a, ResourceState.ACTIVE)

    def _pair(self, driver: ResourceDriver) -> tuple[Resource, Resource]:
        return self._active(driver), driver.provision(SPEC, warm=True)

"""The simulated driver passes the contract, and stays deterministic."""

from __future__ import annotations

import pytest

from allocator.drivers.base import ResourceDriver
from allocator.drivers.simulated import InjectedFault, SimulatedDriver
from allocator.types import Resource
from tests.drivers.contract import ROUTE, SPEC, DriverContract


class SimulatedHarness:
    def __init__(self, driver: SimulatedDriver) -> None:
        self.driver = driver

    def incr(self, route: str, session: str) -> int:
        return self.driver.request(route, session)

    def counter(self, resource: Resource, session: str) -> int | None:
        return self.driver.session(resource.id, session)

    def kill(self, resource: Resource) -> None:
        self.driver.kill(resource.id)


class TestSimulatedContract(DriverContract):
    @pytest.fixture
    def driver(self) -> SimulatedDriver:
        return SimulatedDriver(routes=(ROUTE,))

    @pytest.fixture
    def harness(self, driver: SimulatedDriver) -> SimulatedHarness:
        return SimulatedHarness(driver)


def test_is_a_resource_driver() -> None:
    assert isinstance(SimulatedDriver(), ResourceDriver)


def test_same_calls_give_the_same_ids() -> None:
    def run() -> list[str]:
        driver = SimulatedDriver()
        return [driver.provision(SPEC, warm=i % 2 == 0).id for i in range(4)]

    assert run() == run() == ["sim-0001", "sim-0002", "sim-0003", "sim-0004"]


def test_an_injected_fault_changes_nothing() -> None:
    driver = SimulatedDriver(routes=(ROUTE,))
    a, b = driver.provision(SPEC, warm=True), driver.provision(SPEC, warm=True)
    driver.redirect(ROUTE, None, a)
    driver.fail_next("redirect")
    with pytest.raises(InjectedFault):
        driver.redirect(ROUTE, a, b)
    assert driver.route_members(ROUTE) == (a.id,)
    driver.redirect(ROUTE, a, b)  # the fault fires once
    assert driver.route_members(ROUTE) == (b.id,)

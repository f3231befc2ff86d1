"""The local driver passes the contract on real processes, and survives its own controller."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from allocator.drivers.base import DriverError, ResourceDriver
from allocator.drivers.local import LocalDriver, http_json
from allocator.types import ResourceState
from tests.drivers.contract import ROUTE, SPEC, DriverContract
from tests.drivers.local_harness import LocalHarness, runtime_processes, stop_everything


class TestLocalContract(DriverContract):
    @pytest.fixture
    def driver(self, local_driver: LocalDriver) -> LocalDriver:
        return local_driver

    @pytest.fixture
    def harness(self, local_driver: LocalDriver) -> LocalHarness:
        return LocalHarness(local_driver)


def test_is_a_resource_driver(local_driver: LocalDriver) -> None:
    assert isinstance(local_driver, ResourceDriver)


def test_haproxy_routes_to_the_bound_worker_and_hides_the_admin_api(local_driver: LocalDriver) -> None:
    a = local_driver.provision(SPEC, warm=True)
    local_driver.redirect(ROUTE, None, a)
    url = local_driver.route_url(ROUTE)
    status, body = http_json("POST", url, "/s/x/incr")
    assert status == 200 and body["served_by"] == a.id
    assert local_driver.haproxy_members(ROUTE) == {"s0": int(a.endpoint.rsplit(":", 1)[1])}
    status, _ = http_json("GET", url, "/admin/snapshot")
    assert status == 403  # clients cannot read or move state


def test_two_drivers_share_one_runtime_dir(local_driver: LocalDriver) -> None:
    """A controller and a monitor (or two controllers) in different processes see one inventory."""
    other = LocalDriver(local_driver.runtime_dir, routes=(ROUTE,))
    try:
        a = local_driver.provision(SPEC, warm=True)
        other.redirect(ROUTE, None, other.get(a.id))
        b = other.provision(SPEC, warm=True)
        assert local_driver.route_members(ROUTE) == (a.id,)
        assert {r.id for r in local_driver.list()} == {a.id, b.id}
        local_driver.redirect(ROUTE, local_driver.get(a.id), local_driver.get(b.id))
        assert other.route_members(ROUTE) == (b.id,) and other.probe(other.get(b.id)).ok
        other.release(other.get(a.id))  # spawned by the first driver, stopped by the second
        assert local_driver.get(a.id).state is ResourceState.RELEASED and not local_driver.probe(a).ok
    finally:
        other.close()


def test_a_new_driver_adopts_running_workers_and_kills_orphans(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    first = LocalDriver(runtime, routes=(ROUTE,), slots_per_route=4)
    second = None
    try:
        a = first.provision(SPEC, warm=True)
        first.redirect(ROUTE, None, a)
        first.set_state(a, ResourceState.ACTIVE)
        url = first.route_url(ROUTE)
        assert http_json("POST", url, "/s/x/incr")[1]["counter"] == 1
        pid = first.pid(a.id)
        first.close()  # the controller goes away; the worker and HAProxy keep serving
        with pytest.raises(DriverError, match="closed"):
            first.get(a.id)
        assert http_json("POST", url, "/s/x/incr")[1]["counter"] == 2

        # A worker nobody recorded (spawned by a controller that died before writing it down).
        orphan_announce = runtime / "workers" / "ghost.json"
        orphan = subprocess.Popen([sys.executable, "-m", "allocator.worker", "--id", "ghost",
                                   "--announce", str(orphan_announce)], start_new_session=True)
        deadline = time.monotonic() + 10
        while not orphan_announce.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert json.loads(orphan_announce.read_text())["pid"] == orphan.pid

        second = LocalDriver(runtime, routes=(ROUTE,))
        assert orphan.wait(timeout=5) is not None  # killed on adoption
        assert second.get(a.id).state is ResourceState.ACTIVE and second.pid(a.id) == pid
        assert second.route_members(ROUTE) == (a.id,)
        assert http_json("POST", second.route_url(ROUTE), "/s/x/incr")[1]["counter"] == 3
        assert runtime_processes(runtime) == [pid]
    finally:
        stop_everything(second, runtime)
    assert runtime_processes(runtime) == []


def test_a_restarted_haproxy_gets_its_bindings_back(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    first, again = LocalDriver(runtime, routes=(ROUTE,)), None
    try:
        a = first.provision(SPEC, warm=True)
        first.redirect(ROUTE, None, a)
        http_json("POST", first.route_url(ROUTE), "/s/x/incr")
        first.haproxy.stop()
        first.close()
        again = LocalDriver(runtime, routes=(ROUTE,))
        status, body = http_json("POST", again.route_url(ROUTE), "/s/x/incr")
        assert (status, body["counter"]) == (200, 2)
    finally:
        stop_everything(again, runtime)


def test_admin_socket_is_private_or_abstract_when_the_path_is_too_long(tmp_path: Path) -> None:
    short = tmp_path / "rt"
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "runtime"
    for runtime in (short, deep):
        driver = LocalDriver(runtime, routes=(ROUTE,), slots_per_route=2)
        try:
            kind, _, where = driver.haproxy.socket.partition(":")
            if runtime is short:
                assert kind == "unix" and oct(Path(where).stat().st_mode & 0o777) == "0o600"
            else:
                assert kind == "abns" and not (runtime / "haproxy.sock").exists()
            a = driver.provision(SPEC, warm=True)
            driver.redirect(ROUTE, None, a)  # the runtime API answers either way
            assert driver.haproxy_members(ROUTE) == {"s0": int(a.endpoint.rsplit(":", 1)[1])}
        finally:
            stop_everything(driver, runtime)


def test_a_redirect_haproxy_refuses_changes_nothing_on_disk_and_the_source_keeps_its_state(
        local_driver: LocalDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    a = local_driver.provision(SPEC, warm=True)
    local_driver.redirect(ROUTE, None, a)
    b = local_driver.provision(SPEC, warm=True)
    url = local_driver.route_url(ROUTE)
    assert http_json("POST", url, "/s/x/incr")[1]["counter"] == 1
    local_driver.sync(a, b)
    assert http_json("POST", url, "/s/x/incr")[1]["counter"] == 2  # only the handoff carries this one
    before = (local_driver.runtime_dir / "inventory.json").read_text()
    # A command real HAProxy does not know, for b only: it refuses the batch after the handoff was
    # made, and runs the rest of it (a's unbinding) anyway; the driver must put that back.
    bind, b_port = local_driver.haproxy.bind, int(b.endpoint.rsplit(":", 1)[1])
    monkeypatch.setattr(local_driver.haproxy, "bind", lambda route, slot, port: (
        [f"set server bk_{route}/nope state ready"] if port == b_port else bind(route, slot, port)))
    with pytest.raises(DriverError, match="refused"):
        local_driver.redirect(ROUTE, a, b)
    assert (local_driver.runtime_dir / "inventory.json").read_text() == before
    assert local_driver.route_members(ROUTE) == (a.id,)
    assert local_driver.haproxy_members(ROUTE) == {"s0": int(a.endpoint.rsplit(":", 1)[1])}  # HAProxy agrees
    status, body = http_json("POST", url, "/s/x/incr")
    assert status == 200 and body["served_by"] == a.id and body["counter"] == 3  # a took its state back
    other = LocalDriver(local_driver.runtime_dir, routes=(ROUTE,))
    try:
        assert other.route_members(ROUTE) == (a.id,)
    finally:
        other.close()

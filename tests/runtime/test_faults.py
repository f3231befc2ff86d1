"""Faults on real processes: workers killed mid-switchover, the controller SIGKILLed at every step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from allocator.controller import FAULT_ENV, Controller, SwitchoverFailed
from allocator.drivers.local import LocalDriver, http_json
from allocator.store import Store, open_store
from allocator.types import PoolSpec, ResourceState, SwitchoverPhase
from tests.drivers.local_harness import runtime_processes
from tests.runtime.conftest import REPO, ROUTE, fresh_postgres_database

SPEC = PoolSpec(name="web-pool", cold_provision_s=5, warm_activation_s=0.1)


def _kill(driver: LocalDriver, resource_id: str) -> None:
    os.kill(driver.pid(resource_id), signal.SIGKILL)
    proc = driver._procs.get(resource_id)  # noqa: SLF001 - reap our child so it is really gone
    if proc is not None:
        proc.wait(timeout=5)


def _setup(controller: Controller) -> tuple[str, str]:
    a = controller.provision(SPEC, cluster_id=ROUTE)
    controller.open_route(ROUTE, a.id)
    b = controller.provision(SPEC, cluster_id=ROUTE)
    return a.id, b.id


def _incr(driver: LocalDriver, session: str) -> dict:
    status, body = http_json("POST", driver.route_url(ROUTE), f"/s/{session}/incr")
    assert status == 200, body
    return body


def test_shadow_killed_during_sync_rolls_back_and_the_active_keeps_serving(
        local_driver: LocalDriver, sqlite_store: Store, loadgen) -> None:
    def kill_shadow(when: str, phase: SwitchoverPhase, sw) -> None:  # noqa: ANN001
        if (when, phase) == ("before", SwitchoverPhase.SYNCING):
            _kill(local_driver, sw.target_id)

    controller = Controller(local_driver, sqlite_store, hook=kill_shadow)
    a, b = _setup(controller)
    gen = loadgen(local_driver.route_url(ROUTE), rate=200, duration=20, sessions=12, threads=4)
    try:
        with pytest.raises(SwitchoverFailed) as failed:
            controller.switch("sw-1", ROUTE, a, b)
    finally:
        report = gen.finish()
    assert failed.value.switchover.phase is SwitchoverPhase.ROLLED_BACK
    assert "does not answer" in sqlite_store.get_switchover("sw-1").error
    assert local_driver.get(a).state is ResourceState.ACTIVE and local_driver.get(b).state is ResourceState.FAILED
    assert local_driver.route_members(ROUTE) == (a,)
    assert report["failed"] == 0 and report["state_errors"] == 0 and report["final_mismatches"] == [], report
    assert report["served_by"].keys() == {a}


def test_active_killed_during_redirect_leaves_traffic_on_the_shadow(local_driver: LocalDriver,
                                                                    sqlite_store: Store) -> None:
    def kill_active(when: str, phase: SwitchoverPhase, sw) -> None:  # noqa: ANN001
        if (when, phase) == ("before", SwitchoverPhase.REDIRECTING):
            _kill(local_driver, sw.source_id)

    controller = Controller(local_driver, sqlite_store, hook=kill_active)
    a, b = _setup(controller)
    for _ in range(5):
        _incr(local_driver, "s1")
    sw = controller.switch("sw-1", ROUTE, a, b)
    assert sw.phase is SwitchoverPhase.COMMITTED
    assert (local_driver.get(a).state, local_driver.get(b).state) == (ResourceState.FAILED, ResourceState.ACTIVE)
    assert local_driver.route_members(ROUTE) == (b,)
    body = _incr(local_driver, "s1")
    assert (body["served_by"], body["counter"]) == (b, 6)  # synced before the kill: nothing lost
    assert sqlite_store.get_resource(a).state is ResourceState.FAILED


# --- the controller as its own process, SIGKILLed at each step ------------------------------------------

STEPS = [(when, phase) for phase in ("syncing", "notifying", "redirecting") for when in ("before", "after")]


def _controller(args: list[str], store_url: str, runtime: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "allocator.controller", "--store", store_url, "--runtime-dir",
                           str(runtime), "--route", ROUTE, *args],
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _kill_controller_at(step: tuple[str, str], store_url: str, runtime: Path, loadgen=None) -> None:  # noqa: ANN001
    store = open_store(store_url)
    driver = LocalDriver(runtime, routes=(ROUTE,), slots_per_route=4)
    try:
        a, b = _setup(Controller(driver, store))
        for session in ("s1", "s2"):
            for _ in range(3):
                _incr(driver, session)
        url = driver.route_url(ROUTE)
    finally:
        driver.close()  # the controller process takes over the runtime
    gen = loadgen(url, rate=150, duration=60, sessions=8, threads=4) if loadgen else None
    try:
        when, phase = step
        crashed = _controller(["switch", "--id", "sw-1", "--source", a, "--target", b, "--on", ROUTE],
                              store_url, runtime, env={FAULT_ENV: f"{when}:{phase}:die"})
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        assert not store.get_switchover("sw-1").phase.finished
        resumed = _controller(["resume"], store_url, runtime)
        assert resumed.returncode == 0, resumed.stderr
    finally:
        report = gen.finish() if gen else None

    sw = store.get_switchover("sw-1")
    expected = SwitchoverPhase.COMMITTED if phase == "redirecting" else SwitchoverPhase.ROLLED_BACK
    assert sw.phase is expected, (sw, resumed.stdout)
    active, other = (b, a) if expected is SwitchoverPhase.COMMITTED else (a, b)
    after = LocalDriver(runtime, routes=(ROUTE,))
    try:
        states = {r.id: r.state for r in after.list()}
        assert states == {active: ResourceState.ACTIVE,
                          other: ResourceState.STANDBY if active == b else ResourceState.WARM}
        # One state per resource: the store agrees with the driver, and HAProxy with both.
        assert {rid: store.get_resource(rid).state for rid in states} == states
        assert after.route_members(ROUTE) == (active,)
        assert list(after.haproxy_members(ROUTE).values()) == [int(after.get(active).endpoint.rsplit(":", 1)[1])]
        # No orphans: exactly the two recorded workers run.
        assert sorted(runtime_processes(runtime)) == sorted(after.pid(r) for r in states)
        body = _incr(after, "s1")
        assert (body["served_by"], body["counter"]) == (active, 4)
        assert [e.phase for e in store.journal("sw-1")][-1] is expected
    finally:
        after.shutdown()
        store.close()
    assert runtime_processes(runtime) == []
    if report is not None:
        assert report["failed"] == 0 and report["state_errors"] == 0 and report["final_mismatches"] == [], report


def test_controller_killed_before_redirecting_resumes_on_sqlite(runtime_dir: Path, tmp_path: Path) -> None:
    _kill_controller_at(("before", "redirecting"), f"sqlite:///{tmp_path / 'state.db'}", runtime_dir)


def test_controller_killed_after_syncing_resumes_on_postgresql(runtime_dir: Path, postgres_url: str) -> None:
    _kill_controller_at(("after", "syncing"), fresh_postgres_database(postgres_url), runtime_dir)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("step", STEPS, ids=[f"{w}-{p}" for w, p in STEPS])
def test_controller_killed_at_every_step_under_load(step: tuple[str, str], backend: str, runtime_dir: Path,
                                                    tmp_path: Path, request: pytest.FixtureRequest,
                                                    loadgen) -> None:
    url = (f"sqlite:///{tmp_path / 'state.db'}" if backend == "sqlite"
           else fresh_postgres_database(request.getfixturevalue("postgres_url")))
    _kill_controller_at(step, url, runtime_dir, loadgen)


def test_controller_cli_rejects_bad_input_without_changing_anything(runtime_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(url)
    driver = LocalDriver(runtime_dir, routes=(ROUTE,), slots_per_route=4)
    try:
        a, b = _setup(Controller(driver, store))
    finally:
        driver.close()
    result = _controller(["switch", "--id", "x", "--source", a, "--target", "ghost", "--on", ROUTE], url, runtime_dir)
    assert result.returncode == 2 and "unknown resource 'ghost'" in json.loads(result.stdout)["rejected"]
    assert store.switchovers() == []
    store.close()


def test_two_controller_processes_never_act_on_one_resource(runtime_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(url)
    driver = LocalDriver(runtime_dir, routes=(ROUTE,), slots_per_route=4)
    try:
        controller = Controller(driver, store)
        a, b = _setup(controller)
        c = controller.provision(SPEC, cluster_id=ROUTE).id
    finally:
        driver.close()
    args = ["--store", url, "--runtime-dir", str(runtime_dir), "--route", ROUTE, "switch", "--on", ROUTE]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "allocator.controller", *args, "--id", "sw-1", "--source", a,
                              "--target", b], env={**env, FAULT_ENV: "before:redirecting:pause:3"}, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not any(e.phase is SwitchoverPhase.REDIRECTING for e in store.journal("sw-1")):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        # The second controller (through the CLI entry) wants the same active, for another shadow.
        second = subprocess.run([str(Path(sys.executable).parent / "shadowcast"), "controller", *args,
                                 "--id", "sw-2", "--source", a, "--target", c],
                                env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        assert "locked" in json.loads(second.stdout)["rejected"] or "unfinished" in second.stdout
        assert [s.id for s in store.switchovers()] == ["sw-1"]
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert json.loads(out.strip().splitlines()[-1])["phase"] == "committed", err
    store.close()

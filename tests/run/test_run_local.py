"""`shadowcast run` on the local driver: real worker processes behind a real HAProxy, demand from a
real prometheus, the model from a folder. Client traffic flows through HAProxy the whole time.

- a ramp warms a shadow worker and moves the route onto it before the ramp peaks, and when demand
  falls back the loop reverts the route; no client request fails and no session loses a write;
- SIGTERM stops the loop and leaves no worker and no HAProxy behind;
- with `keep_workers_on_exit` the workers keep serving after exit and the next run adopts them.

Slow: a ramp up and down takes about a minute of wall time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from allocator.drivers.haproxy import _alive
from tests.drivers.local_harness import live_workers, require_haproxy, stop_everything

from .conftest import CAPACITY, LoopProcess, committed_switchovers, journal_time, loop_config

pytestmark = pytest.mark.slow
LOADGEN = Path(__file__).resolve().parents[1] / "runtime" / "loadgen.py"
CLUSTER = "api"


@pytest.fixture
def runtime_dir(tmp_path: Path):
    require_haproxy()
    path = tmp_path / "runtime"
    try:
        yield path
    finally:
        stop_everything(None, path)  # whatever the test or the loop left running


def local_loop(demand, ramp_model: Path, workdir: Path, name: str = "loop", **overrides) -> LoopProcess:
    _, prometheus = demand
    config = loop_config(prometheus.url, CLUSTER, str(ramp_model), workdir, driver="local",
                         runtime={"driver": "local", "runtime_dir": str(workdir / "runtime"), "routes": [CLUSTER],
                                  "slots_per_route": 4, **overrides.pop("runtime", {})}, **overrides)
    return LoopProcess(config, workdir, name)


def route_url(runtime_dir: Path) -> str:
    port = json.loads((runtime_dir / "inventory.json").read_text())["ports"][CLUSTER]
    return f"http://127.0.0.1:{port}"


def route_opened(status: dict) -> bool:
    return any(s["action"] == "open-route" and s["cluster_id"] == CLUSTER for s in status["steps"])


class Traffic:
    """tests/runtime/loadgen.py through the route: every session's counter must go up by one per reply."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.stop_file = workdir / f"stop-{uuid.uuid4().hex[:6]}"
        ready = workdir / f"ready-{uuid.uuid4().hex[:6]}"
        self.process = subprocess.Popen(
            [sys.executable, str(LOADGEN), "--url", url, "--rate", "40", "--threads", "4", "--sessions", "12",
             "--duration", "280", "--stop-file", str(self.stop_file), "--ready-file", str(ready)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert self.process.poll() is None and time.monotonic() < deadline, "the load generator did not start"
            time.sleep(0.02)

    def finish(self) -> dict:
        self.stop_file.touch()
        out, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


def test_ramp_moves_the_route_onto_a_warm_worker_before_the_peak_and_back_after(demand, ramp_model, tmp_path,
                                                                                   runtime_dir):
    exporter, prometheus = demand
    prometheus.wait_for_samples(5)
    loop = local_loop(demand, ramp_model, tmp_path)
    traffic = None
    try:
        loop.wait_for(route_opened, "the route opened on a worker", timeout_s=90)
        traffic = Traffic(route_url(runtime_dir), tmp_path)
        start = loop.status()["iteration"]
        loop.wait_for(lambda s: s["iteration"] >= start + 3, "three iterations at the base level")
        assert committed_switchovers(loop.status(), CLUSTER) == []

        ramp = exporter.start_ramp(CLUSTER, seconds=30, peak=36)
        switchover = loop.wait_for(lambda s: committed_switchovers(s, CLUSTER), "a committed switchover",
                                   timeout_s=ramp.seconds + 30)[0]
        committed = journal_time(switchover, "committed")
        steps = loop.status()["steps"]
        warmed = [s["at"] for s in steps if s["action"] == "provision-shadow" and s["subject"] == switchover["target_id"]]
        assert warmed, steps
        assert ramp.start < warmed[0] < committed < ramp.peak_at
        assert loop.metric("shadowcast_pool_units", cluster=CLUSTER, state="standby") == 1

        # The spike passes: demand falls back from where it got to, and the loop moves the route back.
        fall = exporter.start_ramp(CLUSTER, seconds=8, peak=4.0, start_level=exporter.level(CLUSTER, time.time()))
        revert = loop.wait_for(lambda s: [r for r in s["switchovers"] if r["kind"] == "revert" and
                                          r["phase"] == "committed" and r["cluster_id"] == CLUSTER],
                               "a committed revert", timeout_s=90)[0]
        reverted = journal_time(revert, "committed")
        assert reverted > fall.start
        assert (revert["source_id"], revert["target_id"]) == (switchover["target_id"], switchover["source_id"])
        report = traffic.finish()
        traffic = None
        print(f"\n[local] ramp start 0.0 s (level {ramp.base}), shadow {switchover['target_id']} warm "
              f"{warmed[0] - ramp.start:+.2f} s, switchover committed {committed - ramp.start:+.2f} s (demand then "
              f"{exporter.level(CLUSTER, committed):.1f}, one unit carries {CAPACITY:g}), peak "
              f"{ramp.peak_at - ramp.start:+.2f} s (level {ramp.peak}); fall from {fall.base:.1f} at "
              f"{fall.start - ramp.start:+.2f} s, revert committed {reverted - ramp.start:+.2f} s; "
              f"traffic {report['requests']} requests, {report['failed']} failed, served by {report['served_by']}")
        assert report["failed"] == 0 and report["state_errors"] == 0 and report["final_mismatches"] == [], report
        assert set(report["served_by"]) >= {switchover["source_id"], switchover["target_id"]}

        assert loop.terminate() == 0, loop.log()
        assert live_workers(runtime_dir) == []
        haproxy_pid = int((runtime_dir / "haproxy.pid").read_text().split()[0])
        assert not _alive(haproxy_pid)
    finally:
        if traffic is not None:
            traffic.kill()
        loop.kill()


def test_kept_workers_serve_after_exit_and_the_next_run_adopts_them(demand, ramp_model, tmp_path, runtime_dir):
    _, prometheus = demand
    prometheus.wait_for_samples(5)
    first = local_loop(demand, ramp_model, tmp_path, "first", runtime={"keep_workers_on_exit": True})
    second = None
    try:
        first.wait_for(route_opened, "the route opened on a worker", timeout_s=90)
        active = next(s["subject"] for s in first.status()["steps"] if s["action"] == "open-route")
        assert first.terminate() == 0, first.log()
        workers = live_workers(runtime_dir)
        assert workers, "the kept workers are gone"
        served = httpx.post(f"{route_url(runtime_dir)}/s/kept/incr", timeout=5)
        assert served.status_code == 200 and served.json()["served_by"] == active  # still serving, no loop

        second = local_loop(demand, ramp_model, tmp_path, "second")  # same store and runtime dir; stops them on exit
        status = second.wait_for(lambda s: s if s["plan_id"] else None, "a plan from the second run", timeout_s=90)
        assert not route_opened(status)  # adopted: the route never went without its worker
        again = httpx.post(f"{route_url(runtime_dir)}/s/kept/incr", timeout=5)
        assert again.json() == {**again.json(), "counter": 2, "served_by": active}
        assert second.terminate() == 0, second.log()
        assert live_workers(runtime_dir) == []
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_the_health_monitor_fails_a_killed_active_worker_over(demand, ramp_model, tmp_path, runtime_dir):
    import os
    import signal

    _, prometheus = demand
    prometheus.wait_for_samples(5)
    loop = local_loop(demand, ramp_model, tmp_path, health={"interval_s": 0.5, "failure_threshold": 2})
    try:
        loop.wait_for(route_opened, "the route opened on a worker", timeout_s=90)
        active = next(s["subject"] for s in loop.status()["steps"] if s["action"] == "open-route")
        pid = json.loads((runtime_dir / "inventory.json").read_text())["resources"][active]["pid"]
        os.kill(pid, signal.SIGKILL)
        failover = loop.wait_for(lambda s: [r for r in s["switchovers"] if r["kind"] == "failover" and
                                            r["phase"] == "committed"], "a committed failover", timeout_s=30)[0]
        assert failover["source_id"] == active
        served = httpx.post(f"{route_url(runtime_dir)}/s/after/incr", timeout=5)
        assert served.status_code == 200 and served.json()["served_by"] == failover["target_id"]
        loop.wait_for(lambda s: any(st["action"] == "health:failed-over" for st in s["steps"]), "the failover reported")
        assert loop.metric("shadowcast_health_actions_total", action="failed-over") == 1
        assert loop.terminate() == 0, loop.log()
        assert live_workers(runtime_dir) == []
    finally:
        loop.kill()

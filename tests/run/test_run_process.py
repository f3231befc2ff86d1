"""`shadowcast run` as a real process on the simulated driver, fed by a real prometheus scraping a
demand exporter, with a model from the MLflow registry (trained here, `models:/…@champion`):

- a demand ramp leads to a warm shadow and a committed switchover before the ramp peaks;
- a second loop on the same store refuses to act (the store's lock);
- prometheus stopped mid-run: the last good plan stays in force, alert metrics rise, and the loop
  recovers when prometheus is back;
- the champion alias moved to a broken version: the previous model keeps forecasting, alerts rise;
- SIGTERM stops the loop cleanly, with every unit released;
- `shadowcast run` with no config starts the demo (the README's one command) and stops on SIGINT.

The tests share one loop process and run in file order (the last one stops it); each asserts only
on what it caused itself. The local-driver variant (real workers behind HAProxy) is in
`test_run_local.py` (slow)."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
import yaml

from allocator.drivers.haproxy import free_port

from .conftest import (
    CAPACITY,
    LoopProcess,
    command,
    committed_switchovers,
    journal_time,
    loop_config,
    loop_env,
    register_broken_model,
    register_model,
    set_alias,
)

MODEL = "run-e2e-dpe"
CHAMPION = f"models:/{MODEL}@champion"


@pytest.fixture(scope="module")
def champion(ramp_model) -> str:
    version = register_model(ramp_model, MODEL)
    set_alias(MODEL, "champion", version)
    return version


@pytest.fixture(scope="module")
def loop(demand, champion, tmp_path_factory):
    _, prometheus = demand
    prometheus.wait_for_samples(5)
    workdir = tmp_path_factory.mktemp("sim-loop")
    process = LoopProcess(loop_config(prometheus.url, "web", CHAMPION, workdir), workdir)
    try:
        process.wait_for(lambda s: s["forecaster"] == champion and any(st["action"] == "open-route" for st in s["steps"]),
                         "a plan from the champion and the route opened", timeout_s=90)
        yield process
    finally:
        process.kill()


def test_ramp_warms_a_shadow_and_switches_before_the_peak(loop, demand):
    exporter, _ = demand
    start = loop.status()["iteration"]
    loop.wait_for(lambda s: s["iteration"] >= start + 3, "three iterations at the base level")
    assert committed_switchovers(loop.status(), "web") == []  # the base level needs no move

    ramp = exporter.start_ramp("web", seconds=30, peak=36)
    switchover = loop.wait_for(lambda s: committed_switchovers(s, "web"), "a committed switchover",
                               timeout_s=ramp.seconds + 30)[0]
    committed = journal_time(switchover, "committed")
    status = loop.status()
    warmed = [st["at"] for st in status["steps"]
              if st["action"] == "provision-shadow" and st["subject"] == switchover["target_id"]]
    assert warmed, f"the target {switchover['target_id']} was not provisioned as a shadow: {status['steps']}"
    print(f"\nramp start 0.0 s (level {ramp.base}), shadow warm {warmed[0] - ramp.start:+.2f} s, "
          f"switchover committed {committed - ramp.start:+.2f} s (demand then {exporter.level('web', committed):.1f}, "
          f"one unit carries {CAPACITY:g}), ramp peak {ramp.peak_at - ramp.start:+.2f} s (level {ramp.peak})")
    assert ramp.start < warmed[0] < committed < ramp.peak_at
    assert loop.metric("shadowcast_switchovers_total", kind="switchover", outcome="committed") >= 1
    assert loop.metric("shadowcast_pool_units", cluster="web", state="active") == 1
    assert loop.metric("shadowcast_pool_units", cluster="web", state="standby") == 1  # kept for the revert
    assert loop.metric("shadowcast_forecast_age_seconds") < 10


def test_a_second_loop_on_the_same_store_refuses_to_act(loop, tmp_path):
    second = {**loop.config, "api": {**loop.config["api"], "port": free_port()}}
    path = tmp_path / "second.yaml"
    path.write_text(yaml.safe_dump(second))
    before = loop.status()
    result = subprocess.run(command("--config", str(path)), cwd=tmp_path, env=loop_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert "another `shadowcast run` is acting on the state store" in result.stderr
    assert "holds the control-loop lock" in result.stderr and "runtime.store_url" in result.stderr
    with pytest.raises(httpx.TransportError):  # it never served either
        httpx.get(f"http://127.0.0.1:{second['api']['port']}/healthz", timeout=1)
    loop.wait_for(lambda s: s["iteration"] > before["iteration"] + 1, "the first loop going on")
    assert loop.metric("shadowcast_controller_leader") == 1
    # Had the second one got past the lock, it would have recorded the first one's units as released.
    recorded = loop.get("/v1/resources?cluster_id=web").json()["resources"]
    assert [r["state"] for r in recorded].count("active") == 1


def test_source_down_keeps_the_last_good_plan_and_recovers(loop, demand):
    _, prometheus = demand
    failures = loop.metric("shadowcast_source_failures_total")
    prometheus.stop()
    try:
        down = loop.wait_for(lambda s: s if s["source_healthy"] is False else None, "a failed pull", timeout_s=20)
        kept = down["plan_id"]
        later = loop.wait_for(lambda s: s if s["iteration"] >= down["iteration"] + 3 else None, "iterations while down")
        assert later["plan_id"] == kept and later["source_healthy"] is False
        assert "cannot reach Prometheus" in later["source_error"]
        assert loop.get("/v1/plan/current").json()["plan_id"] == kept  # the API shows the plan in force
        assert loop.metric("shadowcast_source_healthy") == 0
        assert loop.metric("shadowcast_alert", alert="source_down") == 1
        assert loop.metric("shadowcast_source_failures_total") >= failures + 3
        assert loop.metric("shadowcast_plan_age_seconds") >= 2
        assert loop.metric("shadowcast_pool_units", cluster="web", state="active") == 1  # still served
    finally:
        prometheus.start()
    back = loop.wait_for(lambda s: s if s["source_healthy"] and s["plan_id"] != kept else None,
                         "a fresh plan once prometheus is back", timeout_s=30)
    assert back["source_error"] == ""
    assert loop.metric("shadowcast_source_healthy") == 1
    assert loop.metric("shadowcast_alert", alert="source_down") == 0


def test_broken_champion_keeps_the_previous_model(loop, champion, tmp_path):
    broken = register_broken_model(MODEL, tmp_path)
    failed = loop.metric("shadowcast_model_reloads_total", outcome="failed") or 0
    set_alias(MODEL, "champion", broken)
    try:
        down = loop.wait_for(lambda s: s if s["model_healthy"] is False else None, "a failed model load", timeout_s=30)
        assert "holds no shadowcast model" in down["model_error"]
        later = loop.wait_for(lambda s: s if s["plan_id"] != down["plan_id"] else None, "a plan after the failure")
        assert later["forecaster"] == champion  # plans still come from the version loaded before
        assert loop.get("/v1/model").json()["version"] == champion
        assert loop.metric("shadowcast_model_healthy") == 0
        assert loop.metric("shadowcast_alert", alert="model_load_failed") == 1
        assert loop.metric("shadowcast_model_reloads_total", outcome="failed") > failed
    finally:
        set_alias(MODEL, "champion", champion)
    loop.wait_for(lambda s: s["model_healthy"] is True, "a good load once the alias is back", timeout_s=30)
    assert loop.metric("shadowcast_alert", alert="model_load_failed") == 0


def test_sigterm_stops_the_loop_and_releases_every_unit(loop):
    from allocator.store import open_store
    from pipelines.run_config import RunConfig

    assert loop.terminate() == 0, loop.log()
    log = loop.log()
    assert "SIGTERM: stopping after the current step" in log and "stopped after iteration" in log
    store = open_store(RunConfig.model_validate(loop.config).store_url())
    try:
        assert store.resources() == []  # every unit recorded as released
        assert store.switchovers(unfinished_only=True) == []
    finally:
        store.close()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{loop.url}/healthz", timeout=1)


def test_run_with_no_config_starts_the_demo_and_stops_on_sigint(tmp_path):
    """The README's one command: embedded defaults, no model registered yet (a fresh tracking store),
    so the seasonal bootstrap plans for the twelve synthetic clusters on the simulated driver."""
    import os
    import signal

    port = free_port()
    env = {**loop_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    # The real command line, plus an exit hook that lists the training-stack packages it imported.
    launcher = ("import atexit, sys\n"
                "atexit.register(lambda: print('MODULES', sorted({m.split('.')[0] for m in sys.modules} & "
                "{'lightning', 'pytorch_lightning', 'gluonts', 'optuna', 'matplotlib'}), flush=True))\n"
                f"sys.argv = ['shadowcast', 'run', '--port', '{port}']\n"
                "from pipelines.cli import main\nmain()\n")
    process = subprocess.Popen([sys.executable, "-c", launcher], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/v1/run", timeout=2).json()
                if status["plan_id"] and sum(s["action"] == "open-route" for s in status["steps"]) == 12:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        assert status and status["forecaster"] == "fallback:seasonal-bootstrap", (status, process.poll())
        assert "not found" in status["model_error"]  # no shadowcast-dpe in this tracking store
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert 'shadowcast_alert{alert="model_fallback"} 1.0' in metrics
        assert (tmp_path / "runs" / "run" / "shadowcast-runtime.db").exists()  # runtime.runtime_dir default
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert process.returncode == 0, output
    assert "SIGINT: stopping after the current step" in output
    assert "MODULES []" in output  # the serving path: no Lightning, GluonTS, Optuna or matplotlib

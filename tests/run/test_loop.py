"""One pass of the control loop at a time, in this process: the simulated driver, a real SQLite
store (with its lock), a CSV file as the demand source, the model loaded from a folder the way
production loads it. Time is injected where a test needs the plan to age."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from allocator.types import ClusterFleet, ClusterPlan, FleetState, Plan, SwitchoverDecision, SwitchoverMode
from pipelines import run_api
from pipelines.api.metrics import ServeMetrics
from pipelines.run import ControlLoop, ReplaySource, actionable, source_for
from pipelines.run_config import RunConfig
from pipelines.run_process import LoopLockHeld, close_runtime, open_runtime, serve_settings
from pipelines.serve import create_app


def write_demand(path: Path, values: list[float], freq: str = "s") -> Path:
    pd.DataFrame({"cluster_id": "web", "timestamp": pd.date_range("2025-03-01", periods=len(values), freq=freq),
                  "demand": values}).to_csv(path, index=False)
    return path


def config_for(tmp_path: Path, csv: Path, location: Path, **sections) -> RunConfig:
    raw = {"interval_s": 1, "replay": None, "data": {"source": "file", "path": str(csv)},
           "model": {"location": str(location), "reload_interval_s": 0, "fallback": "none"},
           "forecast": {"horizon": 10, "num_samples": 100},
           "plan": {"pool": {"capacity_per_unit": 12, "cold_provision_s": 8, "warm_activation_s": 3}},
           "runtime": {"runtime_dir": str(tmp_path / "runtime"), "routes": ["web"]}}
    for key, value in sections.items():
        raw[key] = {**raw[key], **value}
    return RunConfig.model_validate(raw)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def make_loop():
    opened = []
    threads = torch.get_num_threads()  # the app sets the process's torch threads; give them back after

    def make(config: RunConfig, clock=time.time) -> ControlLoop:  # noqa: ANN001
        runtime, lease = open_runtime(config)
        opened.append((runtime, lease))
        app = create_app(serve_settings(config), runtime=runtime, metrics=ServeMetrics(), follow_model=False,
                         routers=[run_api])
        loop = ControlLoop(config, runtime, app.state.services, source_for(config), clock=clock)
        app.state.services.extras[run_api.LOOP] = loop
        return loop

    try:
        yield make
    finally:
        for runtime, lease in opened:
            close_runtime(runtime, keep_workers=False)
            lease.release()
            runtime.store.close()
        torch.set_num_threads(threads)


def sample(loop: ControlLoop, name: str, **labels: str) -> float | None:
    return loop.metrics.serve.registry.get_sample_value(name, labels)


def test_a_failing_source_leaves_the_last_plan_in_force_until_its_horizon_ends(tmp_path, ramp_model, make_loop):
    csv = write_demand(tmp_path / "demand.csv", [4.0] * 60)
    clock = Clock()
    loop = make_loop(config_for(tmp_path, csv, ramp_model), clock)

    first = loop.iterate()
    assert first.outcome == "ok" and first.plan_id is not None
    assert [s.action for s in first.steps] == ["provision-shadow", "open-route"]
    assert sample(loop, "shadowcast_source_healthy") == 1

    csv.write_text("cluster_id,timestamp,demand\nweb,not a time,3\n")
    kept = loop.iterate()
    assert kept.outcome == "degraded" and kept.plan_id == first.plan_id
    assert "timestamp" in loop.status.source_error
    assert sample(loop, "shadowcast_source_healthy") == 0
    assert sample(loop, "shadowcast_source_failures_total") == 1
    assert sample(loop, "shadowcast_alert", alert="source_down") == 1
    assert loop.services.extras["plan"].plan_id == first.plan_id  # GET /v1/plan/current

    clock.offset = 11  # past the ten one-second steps the plan covers
    expired = loop.iterate()
    assert expired.plan_id == first.plan_id and expired.steps == ()
    assert loop.status.plan_step == 11
    assert sample(loop, "shadowcast_alert", alert="plan_expired") == 1
    assert sample(loop, "shadowcast_plan_age_seconds") >= 11
    assert sample(loop, "shadowcast_pool_units", cluster="web", state="active") == 1  # held as it was

    write_demand(csv, [4.0] * 61)
    back = loop.iterate()
    assert back.outcome == "ok" and back.plan_id != first.plan_id
    assert sample(loop, "shadowcast_alert", alert="source_down") == 0
    assert sample(loop, "shadowcast_alert", alert="plan_expired") == 0
    assert sample(loop, "shadowcast_loop_iterations_total", outcome="degraded") == 2


def test_the_fallback_plans_until_the_model_loads(tmp_path, ramp_model, make_loop):
    csv = write_demand(tmp_path / "demand.csv", [4.0] * 60)
    folder = tmp_path / "model"  # nothing there yet
    loop = make_loop(config_for(tmp_path, csv, folder, model={"fallback": "seasonal-bootstrap",
                                                              "reload_interval_s": 0.05}))
    first = loop.iterate()
    assert first.outcome == "degraded" and loop.status.forecaster == "fallback:seasonal-bootstrap"
    assert "not a shadowcast model folder" in loop.status.model_error
    assert sample(loop, "shadowcast_alert", alert="model_load_failed") == 1
    assert sample(loop, "shadowcast_alert", alert="model_fallback") == 1
    assert sample(loop, "shadowcast_model_reloads_total", outcome="failed") == 1

    shutil.copytree(ramp_model, folder)
    time.sleep(0.1)  # the next load attempt is due
    second = loop.iterate()
    assert second.outcome == "ok" and loop.status.forecaster.startswith("sha256:")
    assert loop.services.models.current.version == loop.status.forecaster
    assert sample(loop, "shadowcast_alert", alert="model_load_failed") == 0
    assert sample(loop, "shadowcast_alert", alert="model_fallback") == 0
    assert sample(loop, "shadowcast_model_healthy") == 1


def test_without_a_model_or_a_fallback_the_loop_stays_idle(tmp_path, make_loop):
    csv = write_demand(tmp_path / "demand.csv", [4.0] * 60)
    loop = make_loop(config_for(tmp_path, csv, tmp_path / "missing"))
    result = loop.iterate()
    assert result.outcome == "idle" and result.plan_id is None and result.steps == ()
    assert loop.runtime.driver.list() == []  # nothing acted on without a forecast


def test_data_the_model_cannot_read_raises_the_forecast_alert(tmp_path, ramp_model, make_loop):
    csv = write_demand(tmp_path / "demand.csv", [4.0] * 60, freq="min")  # the model forecasts seconds
    loop = make_loop(config_for(tmp_path, csv, ramp_model))
    result = loop.iterate()
    assert result.outcome == "idle"
    assert "differs from the model's" in loop.status.forecast_error
    assert sample(loop, "shadowcast_alert", alert="forecast_failed") == 1
    assert sample(loop, "shadowcast_forecast_failures_total") == 1


def test_one_loop_per_store(tmp_path, ramp_model):
    config = config_for(tmp_path, write_demand(tmp_path / "d.csv", [4.0] * 10), ramp_model)
    runtime, lease = open_runtime(config)
    try:
        with pytest.raises(LoopLockHeld, match="holds the control-loop lock"):
            open_runtime(config)
    finally:
        close_runtime(runtime, keep_workers=False)
        lease.release()
        runtime.store.close()
    runtime, lease = open_runtime(config)  # free again once the holder let go
    lease.release()
    runtime.store.close()


def _cluster(active: tuple[int, ...], shadow: tuple[int, ...], *decisions: SwitchoverDecision) -> ClusterPlan:
    return ClusterPlan("web", active, shadow, 0.9, 0.95, (0.0,) * len(active), decisions)


def test_actionable_adapts_tiered_moves_to_the_runtime():
    move_now = SwitchoverDecision("web", 0, SwitchoverMode.TIERED, 2, 0.5)
    move_later = SwitchoverDecision("web", 2, SwitchoverMode.TIERED, 2, 0.2)
    revert = SwitchoverDecision("web", 0, SwitchoverMode.REVERT, 1, 0.0)

    def adapted(cluster: ClusterPlan, fleet: ClusterFleet) -> ClusterPlan:
        return actionable(Plan({"web": cluster}), FleetState({"web": fleet})).clusters["web"]

    # No active unit yet: the route is opened first; moves are for the next plan.
    assert adapted(_cluster((2, 2), (0, 0), move_now), ClusterFleet()).switchovers == ()
    # Moved already (former active on standby): no second move, the revert stays.
    assert adapted(_cluster((2, 2), (0, 0), move_now, revert), ClusterFleet(active=1, standby=1)).switchovers == (revert,)
    # A planned move keeps one shadow warm until it is due, and wherever the plan outgrows the fleet.
    kept = adapted(_cluster((1, 1, 1, 1, 1), (0, 0, 0, 0, 0), move_later), ClusterFleet(active=1))
    assert kept.shadow_units == (1, 1, 1, 0, 0) and kept.switchovers == (move_later,)
    assert adapted(_cluster((1, 2, 2), (0, 0, 3)), ClusterFleet(active=1)).shadow_units == (0, 1, 3)
    # Nothing to adapt: the same plan.
    plain = _cluster((1, 1), (1, 0))
    assert adapted(plain, ClusterFleet(active=1)) is plain


def test_replay_reveals_one_step_per_pull_keeping_the_horizon_hidden(tmp_path):
    from pipelines.run import ConfiguredSource
    from pipelines.settings import DataConfig

    csv = write_demand(tmp_path / "demand.csv", [float(v) for v in range(20)])
    source = ReplaySource(ConfiguredSource(DataConfig(source="file", path=csv)), steps=3, future=2)
    last = [source.pull().history()["demand"].iloc[-1] for _ in range(5)]
    assert last == [14.0, 15.0, 16.0, 17.0, 14.0]  # 5, 4, 3, 2 hidden, then from the start again

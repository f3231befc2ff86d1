"""The simulate job end to end on a tiny synthetic trace: tables, report, MLflow, the demo's entry point."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from allocator.autoscalers import Hpa
from allocator.fleetsim import Scenario
from allocator.types import CostModel, PoolSpec
from forecasting.baselines import SeasonalBootstrap
from forecasting.synthetic import SyntheticSpec, generate_panel
from pipelines.simulate import PolicySetup, replay, replay_holdout, run_simulation

POLICIES = {"static", "reactive", "reactive+warmpool", "predictive-point", "shadowcast", "oracle"}


def test_run_writes_tables_report_and_figures(tiny):
    config = tiny(scenario={"failure_rate_per_hour": 0.01, "outage": {"at": 20, "region": "b"}})
    result = run_simulation(config)
    assert set(result.table["policy"]) == POLICIES
    oracle_cost = result.table.loc[result.table["policy"] == "oracle", "cost"].item()
    assert (result.points["cost"] > oracle_cost).all()  # the oracle is a lower bound
    assert (result.points["unserved_frac"] >= 0).all()
    out = Path(config.output_dir)
    for name in ("report.md", "capacity.png", "frontier.png", "points.csv", "table.csv", "headline.json"):
        assert (out / name).stat().st_size > 0
    assert "| shadowcast |" in (out / "report.md").read_text()
    assert {"unserved_reduction_vs_reactive", "cost_ratio_vs_reactive", "frontier_dominates_predictive_point",
            "frontier_dominates_reactive_warmpool"} <= set(result.headline)
    assert result.headline["shared_pool"]["shared_pool_mean_units"] <= result.headline["shared_pool"][
        "separate_pools_mean_units"]
    assert len(result.points) == 2 + 3 + 3 + 3 + 4  # every setting of every knob, operating points added


def test_run_logs_to_mlflow(tiny):
    import mlflow

    result = run_simulation(tiny(log_mlflow=True), write_report=True)
    run = mlflow.get_run(result.mlflow_run_id)
    assert run.data.metrics["shadowcast.cost"] == pytest.approx(
        result.table.loc[result.table["policy"] == "shadowcast", "cost"].item(), rel=1e-6)
    assert "reactive_warmpool.unserved_frac" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "report")}
    assert "report/frontier.png" in artifacts


def test_the_pipeline_replay_leaves_the_hand_computed_unserved_demand():
    demand = np.full((30, 1), 2.0)
    demand[10:] = 6.0
    setup = PolicySetup(Hpa(1, 60.0, (0.5,)), ("target=0.5",), 0)
    (run,) = replay(demand, demand[0], [setup], None, cadence=1, spec=PoolSpec(), costs=CostModel(),
                    scenario=Scenario(), step_s=60.0)
    assert run.unserved.sum() == pytest.approx(12.0)  # 2 units short from step 10 until the boot at 16


@pytest.fixture(scope="module")
def holdout_data():
    panel = generate_panel(SyntheticSpec(num_clusters=3, days=10, seed=5))
    return panel.cut(24), panel.actuals(24)


def test_replay_holdout_with_a_forecast(holdout_data, tmp_path):
    history, actuals = holdout_data
    forecast = SeasonalBootstrap(seed=0).predict(history, 24, 100)
    table, png = replay_holdout(history, actuals, forecast, out_dir=tmp_path)
    assert list(table.columns[:5]) == ["policy", "setting", "cost", "cost_vs_oracle", "unserved_pct"]
    assert set(table["policy"]) == POLICIES
    assert png.exists() and (tmp_path / "capacity.png").exists()
    assert (table["cost_vs_oracle"] >= 1).all()


def test_replay_holdout_with_a_forecaster_reveals_the_holdout_step_by_step(holdout_data, tmp_path):
    history, actuals = holdout_data
    seen = []

    class Spy(SeasonalBootstrap):
        def predict(self, panel, horizon, num_samples=100):
            seen.append(panel.last_observed().max())
            return super().predict(panel, horizon, num_samples)

    table, _ = replay_holdout(history, actuals, Spy(seed=0), out_dir=tmp_path, cadence_steps=6)
    assert len(seen) == 4 and seen[0] == history.last_observed().max()
    assert seen[1] - seen[0] == 6 * history.step
    assert "shadowcast" in set(table["policy"])


def test_cli_simulate_runs_and_reports_bad_configs(tmp_path):
    binary = Path(sys.executable).parent / "shadowcast"
    config = {
        "trace": {"source": "synthetic", "synthetic": {"num_clusters": 2, "days": 8, "seed": 1}, "holdout_steps": 12},
        "forecaster": {"name": "seasonal-bootstrap", "horizon": 3, "num_samples": 30, "cadence_steps": 1},
        "policies": {"shadowcast": {"penalty_sweep": [10]}, "reactive_warmpool": {"pool_sweep": [1]}},
    }
    path = tmp_path / "simulate-tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ}
    ok = subprocess.run([str(binary), "simulate", "--config", str(path), "--output-dir", str(tmp_path / "out"),
                         "--no-mlflow"], capture_output=True, text=True, timeout=300, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "| shadowcast |" in ok.stdout and "cost_ratio_vs_reactive" in ok.stdout
    assert (tmp_path / "out" / "frontier.png").exists()
    path.write_text(yaml.safe_dump({**config, "policies": {"shadowcast": {"penalties": [1]}}}))
    bad = subprocess.run([str(binary), "simulate", "--config", str(path), "--no-mlflow"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2
    assert "policies.shadowcast.penalties: unknown key" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_simulator_imports_no_heavy_library_until_asked():
    code = ("import sys, pipelines.simulate, allocator.policy, allocator.shadowing; "
            "print(sorted(m for m in ('torch', 'lightning', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    allocator_code = ("import sys, allocator.policy, allocator.calibration, allocator.shadowing, allocator.oracle; "
                      "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pipelines', 'torch', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", allocator_code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_deepar_plugs_in_by_name_and_refits_on_schedule(tiny):
    config = tiny(forecaster={
        "name": "deepar", "horizon": 4, "num_samples": 50, "cadence_steps": 2, "refit_every_steps": 12,
        "options": {"prediction_length": 6, "context_length": 24, "hidden_size": 8, "num_layers": 1,
                    "batches_per_epoch": 5, "max_epochs": 1, "patience": 0, "num_threads": 1}},
        policies={"shadowcast": {"penalty_sweep": [20]}})
    result = run_simulation(config, write_report=False)
    assert result.timings["forecasts"] == 36 // 2
    assert "shadowcast" in set(result.table["policy"])

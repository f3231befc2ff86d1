"""The public traces the benchmark replays (skipped when the shared data folder is absent)."""

import numpy as np
import pytest

from pipelines.settings import PROJECT_ROOT, load_config, parse_config
from pipelines.simulate import run_simulation
from pipelines.simulate_config import SimulateConfig, TraceConfig
from pipelines.simulate_traces import build_trace, load_trace_panel


def trace_of(shared_data_dir, **fields):
    config = TraceConfig(source="dataset", data_dir=shared_data_dir, **fields)
    return build_trace(*load_trace_panel(config), config)


def test_worldcup_minutes_peak_at_fifty_units(shared_data_dir):
    trace = trace_of(shared_data_dir, dataset="worldcup98", start="1998-06-25 00:00", end="1998-06-26 00:00")
    assert trace.steps == 1440 and trace.step_s == 60.0
    assert trace.demand_units.max() == pytest.approx(213235 / (229426 / 50))  # that day's peak, in units
    assert trace.training_peak[0] < trace.demand.max()  # the tournament outgrows everything before it
    assert trace.timestamps[0].isoformat() == "1998-06-25T00:00:00"


def test_m4_hourly_replays_the_48_step_test_horizon_of_each_series(shared_data_dir):
    trace = trace_of(shared_data_dir, dataset="m4_hourly", holdout_steps=48)
    assert trace.demand.shape == (48, 414)
    assert np.allclose(trace.demand_units.max(axis=0) <= 50 + 1e-9, True)
    assert len(set(trace.start)) > 1  # series of different lengths, each cut at its own test start


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alibaba2018", "google2019", "m4-hourly"])
def test_shipped_trace_configs_run(shared_data_dir, tmp_path, name):
    config = load_config(PROJECT_ROOT / "configs" / f"simulate-{name}.yaml", SimulateConfig,
                         {"output_dir": str(tmp_path), "log_mlflow": False,
                          "trace": {"data_dir": str(shared_data_dir)}})
    result = run_simulation(config)
    assert set(result.table["policy"]) >= {"reactive", "shadowcast", "oracle"}


def test_a_short_worldcup_replay_with_the_match_day_spike(shared_data_dir, tmp_path):
    raw = {
        "trace": {"source": "dataset", "dataset": "worldcup98", "data_dir": str(shared_data_dir),
                  "start": "1998-06-25 14:00", "end": "1998-06-25 17:00"},
        "forecaster": {"name": "analog-bootstrap", "options": {"window": 4320}, "horizon": 12,
                       "num_samples": 100, "cadence_steps": 3, "context_steps": 5000},
        "policies": {"static": {"enabled": False}, "reactive_warmpool": {"sweep": [0.7], "pool_sweep": [2]},
                     "predictive_point": {"sweep": [0.7]}, "reactive": {"sweep": [0.7, 0.9]},
                     "shadowcast": {"penalty_sweep": [1000]}},
        "output_dir": str(tmp_path), "log_mlflow": False,
    }
    result = run_simulation(parse_config(raw, SimulateConfig), write_report=False)
    by = result.table.set_index("policy")
    assert by.loc["oracle", "cost"] < by.loc["shadowcast", "cost"]
    assert result.trace.steps == 180

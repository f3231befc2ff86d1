"""Bad configs and traces fail with errors that say where."""

import pytest
import yaml

from forecasting.data import DataValidationError
from pipelines.settings import ConfigError, load_config, parse_config
from pipelines.simulate import run_simulation
from pipelines.simulate_config import SimulateConfig
from pipelines.simulate_forecasters import make_forecaster


def errors_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, SimulateConfig, source="sim.yaml")
    return str(info.value)


@pytest.mark.parametrize("raw, expected", [
    ({"trace": {"holdout_steps": 5, "bogus": 1}}, "sim.yaml: trace.bogus: unknown key"),
    ({"policies": {"reactive": {"target_utilisation": 1.5}}}, "sim.yaml: policies.reactive.target_utilisation"),
    ({"policies": {"reactive": {"sweep": [0.5, 1.2]}}}, "policies.reactive.sweep"),
    ({"policies": {"shadowcast": {"penalty_sweep": [0, 10]}}}, "policies.shadowcast.penalty_sweep"),
    ({"policies": {"reactive_warmpool": {"pool_sweep": [-1]}}}, "policies.reactive_warmpool.pool_sweep"),
    ({"policies": {"shadowcast": {"mode": "sideways"}}}, "policies.shadowcast.mode"),
    ({"trace": {"holdout_steps": 5, "start": "2024-01-01"}}, "either `holdout_steps` or `start`"),
    ({"trace": {"source": "dataset", "holdout_steps": 5}}, "needs `dataset`"),
    ({"pool": {"cold_provision_s": 10, "warm_activation_s": 20}}, "warm_activation_s cannot exceed"),
    ({"costs": {"warm_fraction": 2}}, "costs.warm_fraction"),
    ({"scenario": {"outage": {"at": 3, "region": "mars"}}}, "scenario.outage.region 'mars' is not one of"),
    ({"forecaster": {"cadence_steps": 0}}, "forecaster.cadence_steps"),
])
def test_bad_values_name_the_key(raw, expected):
    assert expected in errors_of(raw)


def test_a_config_file_with_an_unknown_key(tmp_path):
    path = tmp_path / "simulate-bad.yaml"
    path.write_text(yaml.safe_dump({"policies": {"shadowcast": {"penalty": 3}}}))
    with pytest.raises(ConfigError, match=r"simulate-bad.yaml: policies.shadowcast.penalty: unknown key"):
        load_config(path, SimulateConfig)


def test_unknown_forecaster_and_bad_forecaster_options():
    with pytest.raises(ValueError, match="forecaster.name: unknown forecaster 'prophet'"):
        make_forecaster("prophet")
    with pytest.raises(ValueError, match="forecaster.options for 'analog-bootstrap'"):
        make_forecaster("analog-bootstrap", {"nearest": 3})


def test_horizon_too_short_for_the_cadence_and_lead(tiny):
    config = tiny(pool={"cold_provision_s": 7200, "warm_activation_s": 5}, forecaster={"horizon": 2, "cadence_steps": 1})
    with pytest.raises(ValueError, match=r"forecaster.horizon \(2\) must cover"):
        run_simulation(config, write_report=False)


def test_replayed_window_outside_the_trace(tiny):
    config = tiny(trace={"holdout_steps": None, "start": "2030-01-01"})
    with pytest.raises(DataValidationError, match=r"cluster 'cluster-000'.*not inside the trace"):
        run_simulation(config, write_report=False)


def test_too_little_history_before_the_replay(tiny):
    config = tiny(trace={"holdout_steps": 12 * 24})
    with pytest.raises(DataValidationError, match="fewer than 2 steps of history"):
        run_simulation(config, write_report=False)


def test_outage_outside_the_replay(tiny):
    config = tiny(scenario={"outage": {"at": 500, "region": "b"}})
    with pytest.raises(ValueError, match="scenario.outage.at: 500 is outside the replayed window"):
        run_simulation(config, write_report=False)


def test_all_policies_disabled(tiny):
    config = tiny(policies={name: {"enabled": False} for name in
                            ("static", "reactive", "reactive_warmpool", "predictive_point", "shadowcast")})
    with pytest.raises(ValueError, match="every policy is disabled"):
        run_simulation(config, write_report=False)


def test_the_shipped_configs_parse():
    from pathlib import Path

    for path in sorted(Path(__file__).resolve().parents[2].glob("configs/simulate-*.yaml")):
        load_config(path, SimulateConfig)

"""`shadowcast run` settings: the shipped YAML files parse, `configs/run.yaml` is the embedded
default, and every mistake is reported with the file and the key it concerns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.run_config import RunConfig
from pipelines.settings import ConfigError, load_config, parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_shipped_configs_parse_and_run_yaml_is_the_embedded_default():
    files = sorted(CONFIGS.glob("run*.yaml"))
    assert len(files) >= 2
    for path in files:
        load_config(path, RunConfig)
    assert load_config(CONFIGS / "run.yaml", RunConfig) == RunConfig()


@pytest.mark.parametrize("raw, message", [
    ({"runtime": {"drivr": "local"}}, "run.yaml: runtime.drivr: unknown key"),
    ({"interval_s": 0}, "run.yaml: interval_s: Input should be greater than 0"),
    ({"plan": {"policy": {"mode": "scale-out"}}},
     "run.yaml: plan.policy.mode: Value error, the control loop acts on tiered switchovers only"),
    ({"plan": {"pool": {"cold_provision_s": 1, "warm_activation_s": 5}}},
     "run.yaml: plan: Value error, PoolSpec 'default': warm activation cannot be slower than a cold provision"),
    ({"runtime": {"driver": "local", "runtime_dir": None}},
     "run.yaml: runtime: Value error, runtime_dir is needed by the local driver"),
    ({"runtime": {"driver": "local", "routes": ["web 1"]}}, "run.yaml: runtime: Value error, route 'web 1'"),
    ({"runtime": {"routes": []}}, "run.yaml: runtime.routes: List should have at least 1 item"),
    ({"model": {"fallback": "naive"}}, "run.yaml: model.fallback: Input should be 'seasonal-bootstrap' or 'none'"),
    ({"data": {"source": "prometheus", "prometheus": {"demand_query": "x"}}},
     "run.yaml: replay: Value error, replay reveals a static source"),
    ({"replay": None, "data": {"source": "prometheus", "prometheus": {
        "demand_query": "x", "covariates": [{"name": "event", "query": "y", "known_future": True}]}}},
     "data.prometheus.future_steps (0) must cover forecast.horizon (24)"),
])
def test_mistakes_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=_literal(message)):
        parse_config(raw, RunConfig, source="run.yaml")


def test_the_command_reports_a_bad_config_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"runtime": {"drivr": "local"}}))
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}: runtime.drivr: unknown key"
    assert not (tmp_path / "runs").exists()  # refused before any store or driver was opened


def _literal(text: str) -> str:
    import re

    return re.escape(text)

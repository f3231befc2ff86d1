"""Small traces and configs for the simulator tests (seconds, not minutes)."""

from __future__ import annotations

import pytest

from pipelines.settings import parse_config
from pipelines.simulate_config import SimulateConfig


def tiny_config(tmp_path, **sections) -> SimulateConfig:
    """3 synthetic clusters, hourly, 12 days; the last 36 hours are replayed."""
    raw = {
        "trace": {"source": "synthetic", "synthetic": {"num_clusters": 3, "days": 12, "seed": 4}, "holdout_steps": 36},
        "pool": {"cold_provision_s": 300, "warm_activation_s": 5, "regions": ["a", "b", "c"]},
        "forecaster": {"name": "analog-bootstrap", "horizon": 4, "num_samples": 50, "cadence_steps": 1},
        "policies": {"shadowcast": {"penalty_sweep": [2, 20, 200]},
                     "reactive": {"sweep": [0.6, 0.8]},
                     "reactive_warmpool": {"sweep": [0.7], "pool_sweep": [0, 2]},
                     "predictive_point": {"sweep": [0.6, 0.8]},
                     "static": {"sweep": [1.0, 2.0]}},
        "output_dir": str(tmp_path / "out"),
        "log_mlflow": False,
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(raw, SimulateConfig)


@pytest.fixture
def tiny(tmp_path):
    return lambda **sections: tiny_config(tmp_path, **sections)

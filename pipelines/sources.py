"""Demand sources named in a job's `data:` section, each returning a validated `Panel`."""

from __future__ import annotations

from forecasting.data import Panel, read_panel
from forecasting.datasets import load_dataset
from forecasting.synthetic import SyntheticSpec, generate_panel
from pipelines.settings import DataConfig


def load_panel(config: DataConfig) -> Panel:
    panel = _load_source(config)
    return panel.cut(config.hold_out) if config.hold_out else panel


def _load_source(config: DataConfig) -> Panel:
    if config.source == "synthetic":
        return generate_panel(SyntheticSpec(**config.synthetic.model_dump()))
    if config.source == "file":
        assert config.path is not None  # checked by DataConfig
        return read_panel(config.path, past_covariates=config.past_covariates,
                          known_covariates=config.known_covariates, freq=config.freq, max_gap=config.max_gap)
    if config.source == "prometheus":
        from pipelines.prometheus_source import load_prometheus_panel

        assert config.prometheus is not None  # checked by DataConfig
        return load_prometheus_panel(config.prometheus, max_gap=config.max_gap)
    assert config.dataset is not None
    options = {"resample": config.resample} if config.resample else {}
    return load_dataset(config.dataset, config.data_dir, **options).panel

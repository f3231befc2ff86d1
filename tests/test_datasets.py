"""Loaders of the public datasets (skipped when ../shared/data is absent)."""

import numpy as np
import pytest

from forecasting.baselines import SeasonalNaive
from forecasting.datasets import DatasetNotFoundError, load_dataset
from forecasting.metrics import mean_weighted_quantile_loss


def test_m4_hourly_has_414_series_and_gluonts_seasonal_naive_score(shared_data_dir):
    dataset = load_dataset("m4_hourly", shared_data_dir)
    assert len(dataset.panel.cluster_ids) == 414 and dataset.horizon == 48
    lengths = dataset.panel.lengths()
    assert set(lengths.unique()) == {700 + 48, 960 + 48}
    history = dataset.panel.cut(48)
    score = mean_weighted_quantile_loss(SeasonalNaive(24).predict(history, 48), dataset.panel.actuals(48))
    assert score == pytest.approx(0.048, abs=0.0015)  # GluonTS's published seasonal-naive figure


def test_worldcup98_resampling_sums_requests(shared_data_dir):
    per_minute = load_dataset("worldcup98", shared_data_dir).panel
    hourly = load_dataset("worldcup98", shared_data_dir, resample="1h").panel
    assert hourly.freq == "h" and per_minute.freq == "min"
    # Interpolated gap minutes add a little; the totals agree within 0.1 %.
    assert hourly.history()["demand"].sum() == pytest.approx(per_minute.history()["demand"].sum(), rel=1e-3)


@pytest.mark.parametrize("name, clusters, past", [
    ("alibaba2018", 1, 4), ("google2019", 1, 3), ("etth1", 6, 1)])
def test_usage_traces_load_with_their_covariates(shared_data_dir, name, clusters, past):
    panel = load_dataset(name, shared_data_dir).panel
    assert len(panel.cluster_ids) == clusters and len(panel.past_covariates) == past
    assert np.isfinite(panel.history()["demand"]).all()


def test_missing_data_dir_and_unknown_name(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="SHADOWCAST_DATA_DIR"):
        load_dataset("m4_hourly", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'm5'"):
        load_dataset("m5", tmp_path)

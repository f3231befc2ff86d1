import numpy as np
import pandas as pd
import pytest

from forecasting.forecast import Forecast


def make(samples: np.ndarray, clusters=("a", "b")) -> Forecast:
    return Forecast.aligned(list(clusters), pd.Timestamp("2024-01-01"), "h", samples)


def test_quantiles_of_known_samples():
    # Cluster a: 0..100 in every step; cluster b: 100..200.
    paths = np.stack([np.tile(np.arange(101.0)[:, None], (1, 3)), np.tile(np.arange(100.0, 201.0)[:, None], (1, 3))])
    forecast = make(paths)
    assert forecast.quantile(0.5).tolist() == [[50.0] * 3, [150.0] * 3]
    assert forecast.quantile([0.1, 0.9])[:, 0, 0].tolist() == pytest.approx([10.0, 90.0])
    assert forecast.mean()[1, 2] == pytest.approx(150.0)


def test_to_frame_has_timestamps_mean_and_quantile_columns():
    forecast = make(np.ones((2, 5, 4)))
    frame = forecast.to_frame([0.1, 0.5])
    assert list(frame.columns) == ["cluster_id", "timestamp", "mean", "q0.1", "q0.5"]
    assert len(frame) == 8
    assert frame["timestamp"].iloc[3] == pd.Timestamp("2024-01-01 03:00")


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    forecast = Forecast(["x", "y"], pd.DatetimeIndex(["2024-01-01", "2024-01-02"]), "h", rng.normal(size=(2, 7, 3)))
    forecast.save(tmp_path / "f.npz")
    loaded = Forecast.load(tmp_path / "f.npz")
    assert loaded.cluster_ids == ["x", "y"]
    assert (loaded.starts == forecast.starts).all()
    np.testing.assert_array_equal(loaded.samples, forecast.samples)


def test_start_requires_aligned_clusters():
    forecast = Forecast(["x", "y"], pd.DatetimeIndex(["2024-01-01", "2024-01-02"]), "h", np.zeros((2, 1, 1)))
    with pytest.raises(ValueError, match="different timestamps"):
        _ = forecast.start


@pytest.mark.parametrize("shape", [(2, 3), (3, 2, 2), (2, 0, 4)])
def test_bad_sample_shapes_are_rejected(shape):
    with pytest.raises(ValueError):
        make(np.zeros(shape))


def test_select_and_unknown_cluster():
    forecast = make(np.arange(2 * 2 * 1, dtype=float).reshape(2, 2, 1))
    assert forecast.select(["b"]).samples.tolist() == [[[2.0], [3.0]]]
    with pytest.raises(KeyError, match="'z'"):
        forecast.select(["z"])

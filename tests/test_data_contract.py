"""The data contract: every bad-input case gets its own error naming file, column, cluster and row."""

import numpy as np
import pandas as pd
import pytest

from forecasting.data import DataValidationError, read_panel, validate_panel


def frame(clusters=("a", "b"), steps=10, freq="h", **columns) -> pd.DataFrame:
    times = pd.date_range("2024-01-01", periods=steps, freq=freq)
    out = pd.DataFrame({
        "cluster_id": np.repeat(clusters, steps),
        "timestamp": np.tile(times, len(clusters)),
        "demand": np.arange(steps * len(clusters), dtype=float),
    })
    for name, values in columns.items():
        out[name] = values
    return out


def write_csv(tmp_path, df: pd.DataFrame, name="panel.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_valid_panel_keeps_everything_sorted_and_typed():
    panel = validate_panel(frame(temp=np.arange(20.0)), known_covariates=["temp"])
    assert panel.freq == "h"
    assert panel.cluster_ids == ["a", "b"]
    assert list(panel.frame.columns) == ["cluster_id", "timestamp", "demand", "temp"]
    assert panel.lengths().tolist() == [10, 10]


def test_missing_column_names_file_and_column(tmp_path):
    path = write_csv(tmp_path, frame().drop(columns="demand"))
    with pytest.raises(DataValidationError, match=r"panel\.csv, column 'demand': required column is missing") as err:
        read_panel(path)
    assert err.value.column == "demand"


def test_missing_declared_covariate():
    with pytest.raises(DataValidationError, match="column 'cpu'"):
        validate_panel(frame(), past_covariates=["cpu"])


def test_duplicated_timestamp_names_cluster_and_both_rows(tmp_path):
    df = frame()
    df.loc[14, "timestamp"] = df.loc[13, "timestamp"]  # cluster b, data rows 14 and 15
    with pytest.raises(DataValidationError) as err:
        read_panel(write_csv(tmp_path, df))
    message = str(err.value)
    assert "cluster 'b'" in message and "row 15" in message and "also at row 14" in message
    assert "duplicated timestamp" in message


def test_non_monotonic_timestamps_are_rejected():
    df = frame()
    df.loc[[3, 4], "timestamp"] = df.loc[[4, 3], "timestamp"].to_numpy()
    with pytest.raises(DataValidationError, match=r"cluster 'a', row 5: timestamps are not increasing"):
        validate_panel(df)


def test_mixed_frequencies_are_rejected():
    hourly = frame(clusters=("a",))
    half_hourly = frame(clusters=("b",), freq="30min")
    with pytest.raises(DataValidationError, match="mixed frequencies"):
        validate_panel(pd.concat([hourly, half_hourly], ignore_index=True))


def test_step_off_the_declared_frequency_is_rejected():
    df = frame(clusters=("a",))
    df.loc[5:, "timestamp"] += pd.Timedelta(minutes=20)
    with pytest.raises(DataValidationError, match=r"cluster 'a', row 6: mixed frequencies"):
        validate_panel(df, freq="h")


def test_negative_demand_is_rejected_with_value():
    df = frame()
    df.loc[12, "demand"] = -3.0
    with pytest.raises(DataValidationError, match=r"column 'demand', cluster 'b', row 13: demand is negative \(-3.0\)"):
        validate_panel(df)


def test_negative_demand_allowed_when_declared():
    df = frame()
    df.loc[12, "demand"] = -3.0
    assert validate_panel(df, allow_negative=True).history()["demand"].min() == -3.0


def test_non_numeric_demand_in_csv_names_the_value(tmp_path):
    df = frame().astype({"demand": object})
    df.loc[7, "demand"] = "12 units"
    with pytest.raises(DataValidationError, match=r"cluster 'a', row 8: value '12 units' is not a number"):
        read_panel(write_csv(tmp_path, df))


def test_unparseable_timestamp():
    df = frame().astype({"timestamp": object})
    df.loc[2, "timestamp"] = "yesterday-ish"
    with pytest.raises(DataValidationError, match=r"row 3: timestamp 'yesterday-ish' cannot be parsed"):
        validate_panel(df)


def test_short_gap_is_filled_by_linear_interpolation():
    df = frame().drop(index=[3, 4])  # cluster a misses 03:00 and 04:00 (values 3 and 4)
    df.loc[5, "demand"] = 8.0  # neighbours now 2.0 and 8.0
    panel = validate_panel(df, max_gap=2)
    a = panel.history().query("cluster_id == 'a'")["demand"].to_numpy()
    assert a[2:6].tolist() == [2.0, 4.0, 6.0, 8.0]
    assert len(a) == 10


def test_gap_longer_than_limit_is_rejected():
    df = frame()
    df.loc[12:15, "demand"] = np.nan  # 4 missing values in cluster b
    with pytest.raises(DataValidationError, match=r"column 'demand', cluster 'b': 4 missing step\(s\).*max_gap=3"):
        validate_panel(df, max_gap=3)
    assert len(validate_panel(df, max_gap=4).history()) == 20


def test_covariate_gap_rules_apply_too():
    df = frame(cpu=np.arange(20.0))
    df.loc[2:6, "cpu"] = np.nan
    with pytest.raises(DataValidationError, match=r"column 'cpu', cluster 'a': 5 missing"):
        validate_panel(df, past_covariates=["cpu"])


def test_known_covariate_missing_over_the_horizon():
    df = frame(temp=np.arange(20.0))
    df.loc[[7, 8, 9], "demand"] = np.nan  # three future rows for cluster a
    df.loc[[17, 18, 19], "demand"] = np.nan
    df.loc[19, "temp"] = np.nan  # cluster b lacks its 3rd future temperature
    panel = validate_panel(df, known_covariates=["temp"])
    panel.require_future(2)
    with pytest.raises(DataValidationError,
                       match=r"column 'temp', cluster 'b': known-future covariate is missing at 2024-01-01 09:00:00"):
        panel.require_future(3)


def test_trailing_empty_demand_rows_are_future_rows_and_past_covariates_are_dropped_there():
    df = frame(cpu=np.ones(20))
    df.loc[[8, 9], "demand"] = np.nan
    panel = validate_panel(df, past_covariates=["cpu"])
    assert panel.last_observed()["a"] == pd.Timestamp("2024-01-01 07:00")
    future = panel.frame[panel.frame["demand"].isna()]
    assert len(future) == 2 and future["cpu"].isna().all()


def test_cluster_without_any_demand():
    df = frame()
    df.loc[df.cluster_id == "b", "demand"] = np.nan
    with pytest.raises(DataValidationError, match="cluster 'b': cluster has no observed demand"):
        validate_panel(df)


def test_covariate_declared_twice():
    with pytest.raises(DataValidationError, match="both past-only and known-future"):
        validate_panel(frame(x=1.0), past_covariates=["x"], known_covariates=["x"])


def test_parquet_and_csv_read_the_same(tmp_path):
    df = frame(temp=np.linspace(0, 1, 20))
    df.to_parquet(tmp_path / "p.parquet", index=False)
    from_parquet = read_panel(tmp_path / "p.parquet", known_covariates=["temp"])
    from_csv = read_panel(write_csv(tmp_path, df), known_covariates=["temp"])
    pd.testing.assert_frame_equal(from_parquet.frame, from_csv.frame)


def test_unsupported_file_type_and_missing_file(tmp_path):
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(DataValidationError, match="unsupported file type '.json'"):
        read_panel(tmp_path / "p.json")
    with pytest.raises(DataValidationError, match="file does not exist"):
        read_panel(tmp_path / "absent.csv")


def test_cut_hides_past_only_covariates_of_the_hidden_rows_too():
    panel = validate_panel(frame(cpu=np.arange(20.0), temp=np.arange(20.0)), past_covariates=["cpu"],
                           known_covariates=["temp"])
    hidden = panel.cut(3).frame.query("demand.isna()", engine="python")
    assert len(hidden) == 6
    assert hidden["cpu"].isna().all() and hidden["temp"].notna().all()


def test_cut_hides_the_tail_and_actuals_return_it():
    panel = validate_panel(frame())
    history = panel.cut(3)
    assert history.lengths().tolist() == [7, 7]
    assert panel.actuals(3).tolist() == [[7.0, 8.0, 9.0], [17.0, 18.0, 19.0]]
    with pytest.raises(DataValidationError, match="too few observations"):
        panel.cut(10)

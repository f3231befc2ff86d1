"""Loaders for the public datasets, each turned into a validated `Panel`.

The files are not part of the project: they are read from a data directory given as an argument,
else `SHADOWCAST_DATA_DIR`, else `../shared/data` next to the project checkout. Each loader reads
the unmodified public file (see that folder's README for sources and licences).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.data import DEMAND, ID, TIME, Panel, validate_panel

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR_ENV = "SHADOWCAST_DATA_DIR"


class DatasetNotFoundError(FileNotFoundError):
    """A public dataset's files are not in the data directory."""


@dataclass(frozen=True)
class Dataset:
    """A panel with its customary forecast horizon; `panel.cut(horizon)` is the standard train part."""

    name: str
    panel: Panel
    horizon: int


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return PROJECT_ROOT.parent / "shared" / "data"


def _require(path: Path, dataset: str) -> Path:
    if not path.exists():
        raise DatasetNotFoundError(
            f"dataset {dataset!r}: {path} not found; point --data-dir or {DATA_DIR_ENV} at the folder "
            f"holding the public datasets (see data/README.md)")
    return path


def load_m4_hourly(data_dir: Path) -> Dataset:
    """M4 hourly: 414 series, train + the 48-step test appended; hourly from 1750-01-01 like GluonTS."""
    folder = data_dir / "m4_hourly"
    train = pd.read_csv(_require(folder / "Hourly-train.csv", "m4_hourly"), index_col=0)
    test = pd.read_csv(_require(folder / "Hourly-test.csv", "m4_hourly"), index_col=0)
    if not train.index.equals(test.index):
        raise ValueError(f"{folder}: train and test files list different series")
    rows = []
    for series_id, train_row, test_row in zip(train.index, train.to_numpy(), test.to_numpy(), strict=True):
        values = np.concatenate([train_row[~np.isnan(train_row)], test_row[~np.isnan(test_row)]])
        rows.append(pd.DataFrame({
            ID: series_id,
            TIME: pd.date_range("1750-01-01", periods=len(values), freq="h"),
            DEMAND: values,
        }))
    panel = validate_panel(pd.concat(rows, ignore_index=True), source=str(folder), freq="h")
    return Dataset("m4_hourly", panel, horizon=test.shape[1])


def load_worldcup98(data_dir: Path, resample: str | None = None) -> Dataset:
    """Requests per minute to the 1998 World Cup site; `resample` (e.g. "5min", "1h") sums them."""
    path = _require(data_dir / "worldcup98" / "invocation_count.csv", "worldcup98")
    raw = pd.read_csv(path, parse_dates=["period"])
    frame = pd.DataFrame({ID: "worldcup98", TIME: raw["period"], DEMAND: raw["count"].astype(float)})
    panel = validate_panel(frame, source=str(path), freq="min")
    if resample:
        hist = panel.history().set_index(TIME)[DEMAND].resample(resample).sum(min_count=1)
        frame = pd.DataFrame({ID: "worldcup98", TIME: hist.index, DEMAND: hist.to_numpy()})
        panel = validate_panel(frame, source=f"{path} (summed per {resample})", freq=resample)
    steps_per_day = int(pd.Timedelta(days=1) / panel.step)
    return Dataset("worldcup98", panel, horizon=steps_per_day)


def _usage_trace(path: Path, name: str, demand: str, start: str) -> Dataset:
    """A cluster-wide usage trace in 5-minute bins with no timestamp column (row i = i × 300 s)."""
    raw = pd.read_csv(path)
    if demand not in raw.columns:
        raise ValueError(f"{path}: column {demand!r} missing (columns present: {list(raw.columns)})")
    frame = raw.rename(columns={demand: DEMAND})
    frame.insert(0, TIME, pd.date_range(start, periods=len(frame), freq="5min"))
    frame.insert(0, ID, name)
    past = [c for c in raw.columns if c != demand]
    panel = validate_panel(frame, source=str(path), freq="5min", past_covariates=past)
    return Dataset(name, panel, horizon=12 * 24)


def load_alibaba2018(data_dir: Path) -> Dataset:
    """Alibaba 2018 cluster CPU utilisation (%); memory, network and disk as past-only covariates.
    The trace has no dates: it is placed at 2018-01-01 00:00."""
    path = _require(data_dir / "alibaba2018" / "machine_usage_days_1_to_8_grouped_300_seconds.csv", "alibaba2018")
    return _usage_trace(path, "alibaba2018", "cpu_util_percent", "2018-01-01")


def load_google2019(data_dir: Path) -> Dataset:
    """Google 2019 cell CPU usage; memory and CPI as past-only covariates. Placed at 2019-05-01."""
    path = _require(data_dir / "google2019" / "instance_usage_grouped_300_seconds_month.csv", "google2019")
    return _usage_trace(path, "google2019", "avg_cpu", "2019-05-01")


def load_etth1(data_dir: Path) -> Dataset:
    """ETTh1: the six load columns are six clusters; oil temperature `OT` is a past-only covariate.
    Net electrical loads can be negative, so negative demand is allowed here."""
    path = _require(data_dir / "ett" / "ETTh1.csv", "etth1")
    raw = pd.read_csv(path, parse_dates=["date"])
    loads = [c for c in raw.columns if c not in {"date", "OT"}]
    frame = raw.melt(id_vars=["date", "OT"], value_vars=loads, var_name=ID, value_name=DEMAND)
    frame = frame.rename(columns={"date": TIME})[[ID, TIME, DEMAND, "OT"]]
    panel = validate_panel(frame, source=str(path), freq="h", past_covariates=["OT"], allow_negative=True)
    return Dataset("etth1", panel, horizon=24)


LOADERS: dict[str, Callable[..., Dataset]] = {
    "m4_hourly": load_m4_hourly,
    "worldcup98": load_worldcup98,
    "alibaba2018": load_alibaba2018,
    "google2019": load_google2019,
    "etth1": load_etth1,
}


def load_dataset(name: str, data_dir: str | Path | None = None, **options) -> Dataset:
    """Load a public dataset by name (one of `LOADERS`); options go to its loader."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[name](resolve_data_dir(data_dir), **options)

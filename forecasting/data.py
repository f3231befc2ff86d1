"""The data contract: a validated long-format panel of demand per cluster.

A panel is a table with one row per cluster and time step:

    cluster_id  timestamp            demand  temperature  cpu_util
    web-1       2024-01-01 00:00     120.0   7.5          0.41
    ...

Every covariate column is declared either *past-only* (observed usage, such as CPU or memory,
known only up to now) or *known-future* (calendar, scheduled events, a weather forecast: known
over the forecast horizon too). Rows after a cluster's last observed demand, with `demand` empty,
carry known-future covariates for the horizon.

Rules, applied in this order (errors name the source, column, cluster and 1-based data row, the
header not counted):
1. the columns `cluster_id`, `timestamp`, `demand` and every declared covariate must exist;
2. timestamps must parse; demand and covariates must be numeric and finite; demand must not be
   negative (unless the loader says the quantity can be, as for net electrical load);
3. within a cluster, timestamps must strictly increase (no duplicates, no going back);
4. all clusters share one frequency; a step that is not a whole multiple of it is an error
   ("mixed frequencies");
5. missing steps and empty values are gaps. A gap of at most `max_gap` steps is filled by linear
   interpolation between its neighbours (per cluster and column); a longer one is an error.
   Leading empty demand rows are dropped (the series has not started); trailing ones are the
   future rows described above, where past-only covariates are ignored;
6. at forecast time, `Panel.require_future(horizon)` checks every known-future covariate is
   present for each of the `horizon` steps after each cluster's last observation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ID, TIME, DEMAND = "cluster_id", "timestamp", "demand"
DEFAULT_MAX_GAP = 3


class DataValidationError(ValueError):
    """Bad input data; the message says which file, column, cluster and row, and what is wrong."""

    def __init__(
        self,
        message: str,
        *,
        source: str,
        column: str | None = None,
        cluster: str | None = None,
        row: int | None = None,
    ) -> None:
        self.source, self.column, self.cluster, self.row = source, column, cluster, row
        where = [source]
        if column is not None:
            where.append(f"column {column!r}")
        if cluster is not None:
            where.append(f"cluster {cluster!r}")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(f"{', '.join(where)}: {message}")


@dataclass(frozen=True)
class Panel:
    """A validated panel: sorted by cluster then time, on a regular grid per cluster, gaps filled.

    `frame` holds `cluster_id` (str), `timestamp`, `demand` (float, NaN only in the trailing
    future rows) and the covariate columns. Build one with `validate_panel` or a loader.
    """

    frame: pd.DataFrame
    freq: str
    past_covariates: tuple[str, ...] = ()
    known_covariates: tuple[str, ...] = ()
    source: str = "<panel>"
    allow_negative: bool = False
    _ends: pd.Series = field(init=False, repr=False, compare=False)
    _history: pd.DataFrame = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The observed rows, selected once: the selection cost ~7 ms on M4 hourly (350k rows) and
        # a fit or a forecast asked for it four or five times.
        observed = self.frame[self.frame[DEMAND].notna()]
        object.__setattr__(self, "_history", observed)
        object.__setattr__(self, "_ends", observed.groupby(ID, sort=False)[TIME].max())

    @property
    def cluster_ids(self) -> list[str]:
        return list(self._ends.index)

    @property
    def covariates(self) -> tuple[str, ...]:
        return self.known_covariates + self.past_covariates

    @property
    def step(self) -> pd.Timedelta:
        return pd.Timedelta(pd.tseries.frequencies.to_offset(self.freq))

    def last_observed(self) -> pd.Series:
        """Timestamp of each cluster's last observed demand, indexed by cluster id."""
        return self._ends.copy()

    def history(self) -> pd.DataFrame:
        """Only the rows with observed demand (a shallow copy: adding columns to it leaves the panel as it was)."""
        return self._history.copy(deep=False)

    def holds_counts(self) -> bool:
        """Whether every observed demand is a non-negative whole number (what a count model can fit)."""
        demand = self.history()[DEMAND]
        return bool((demand >= 0).all() and (demand == demand.round()).all())

    def lengths(self) -> pd.Series:
        return self.history().groupby(ID, sort=False).size()

    def replace_frame(self, frame: pd.DataFrame) -> Panel:
        return Panel(frame, self.freq, self.past_covariates, self.known_covariates, self.source, self.allow_negative)

    def select(self, cluster_ids: Sequence[str]) -> Panel:
        missing = sorted(set(cluster_ids) - set(self._ends.index))
        if missing:
            raise KeyError(f"{self.source}: unknown clusters {missing}")
        return self.replace_frame(self.frame[self.frame[ID].isin(list(cluster_ids))].reset_index(drop=True))

    def cut(self, drop_last: int) -> Panel:
        """The panel without each cluster's last `drop_last` observations; the dropped rows become
        future rows (demand emptied) so known-future covariates stay available over them."""
        if drop_last < 0:
            raise ValueError("drop_last must be >= 0")
        frame = self.history().copy()
        position_from_end = frame.groupby(ID, sort=False).cumcount(ascending=False)
        too_short = frame.groupby(ID, sort=False).size() <= drop_last
        if too_short.any():
            raise DataValidationError(
                f"has too few observations to hold out {drop_last} steps", source=self.source,
                cluster=str(too_short[too_short].index[0]))
        # Hidden rows become future rows: demand and past-only covariates are unknown there.
        frame.loc[position_from_end < drop_last, [DEMAND, *self.past_covariates]] = np.nan
        return self.replace_frame(frame.reset_index(drop=True))

    def truncate_future(self, horizon: int) -> Panel:
        """Keep at most `horizon` future rows per cluster."""
        frame = self.frame
        ends = frame[ID].map(self._ends)
        steps_ahead = (frame[TIME] - ends) / self.step
        return self.replace_frame(frame[steps_ahead <= horizon].reset_index(drop=True))

    def actuals(self, drop_last: int) -> np.ndarray:
        """`[clusters, drop_last]` demand of each cluster's last `drop_last` observations."""
        hist = self.history()
        return np.stack([g[DEMAND].to_numpy()[-drop_last:] for _, g in hist.groupby(ID, sort=False)])

    def require_future(self, horizon: int) -> None:
        """Raise unless every known-future covariate is present over the next `horizon` steps."""
        if not self.known_covariates:
            return
        future = self.frame[self.frame[DEMAND].isna()]
        for cluster, end in self._ends.items():
            expected = pd.date_range(end + self.step, periods=horizon, freq=self.freq)
            rows = future[future[ID] == cluster].set_index(TIME).reindex(expected)
            for column in self.known_covariates:
                missing = rows.index[rows[column].isna()]
                if len(missing):
                    raise DataValidationError(
                        f"known-future covariate is missing at {missing[0]} "
                        f"({len(missing)} of the {horizon} forecast steps); the horizon needs values "
                        f"from {expected[0]} to {expected[-1]}",
                        source=self.source, column=column, cluster=str(cluster))


def read_panel(
    path: str | Path,
    *,
    past_covariates: Sequence[str] = (),
    known_covariates: Sequence[str] = (),
    freq: str | None = None,
    max_gap: int = DEFAULT_MAX_GAP,
    allow_negative: bool = False,
) -> Panel:
    """Read and validate a long-format panel from a `.csv` or `.parquet` file."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise DataValidationError("file does not exist", source=source)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        # Read everything as text first so that a non-numeric value is reported, not silently NaN.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    elif suffix in {".parquet", ".pq"}:
        frame = pd.read_parquet(path)
    else:
        raise DataValidationError(f"unsupported file type {suffix or '(none)'!r}; use .csv or .parquet", source=source)
    return validate_panel(
        frame, source=source, past_covariates=past_covariates, known_covariates=known_covariates,
        freq=freq, max_gap=max_gap, allow_negative=allow_negative)


def validate_panel(
    frame: pd.DataFrame,
    *,
    source: str = "<frame>",
    past_covariates: Sequence[str] = (),
    known_covariates: Sequence[str] = (),
    freq: str | None = None,
    max_gap: int = DEFAULT_MAX_GAP,
    allow_negative: bool = False,
) -> Panel:
    """Check `frame` against the contract (module docstring) and return the cleaned `Panel`."""
    past, known = tuple(past_covariates), tuple(known_covariates)
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    both = set(past) & set(known)
    if both:
        raise DataValidationError(f"declared both past-only and known-future: {sorted(both)}", source=source,
                                  column=sorted(both)[0])
    covariates = known + past
    for column in (ID, TIME, DEMAND, *covariates):
        if column not in frame.columns:
            raise DataValidationError(f"required column is missing (columns present: {list(frame.columns)})",
                                      source=source, column=column)
    if len(frame) == 0:
        raise DataValidationError("no rows", source=source)

    table = pd.DataFrame({ID: frame[ID], "_row": np.arange(1, len(frame) + 1)})
    if table[ID].isna().any():
        raise DataValidationError("cluster id is empty", source=source, column=ID,
                                  row=int(table["_row"][table[ID].isna()].iloc[0]))
    table[ID] = table[ID].astype(str)
    table[TIME] = _parse_timestamps(frame[TIME], table, source)
    for column in (DEMAND, *covariates):
        table[column] = _parse_numbers(frame[column], table, column, source)
    negative = table[DEMAND] < 0
    if negative.any() and not allow_negative:
        _raise_at(table, negative, DEMAND, source, lambda v: f"demand is negative ({v})")

    _check_order(table, source)
    step = _infer_step(table, freq, source)
    table = _fill_gaps(_on_grid(table, step), covariates, past, max_gap, source)
    freq_str = pd.tseries.frequencies.to_offset(step).freqstr
    return Panel(table, freq_str, past, known, source, allow_negative)


def _raise_at(table: pd.DataFrame, bad: pd.Series, column: str, source: str, describe) -> None:
    first = table[bad].iloc[0]
    raise DataValidationError(describe(first[column]), source=source, column=column,
                              cluster=str(first[ID]), row=int(first["_row"]))


def _parse_timestamps(raw: pd.Series, table: pd.DataFrame, source: str) -> pd.Series:
    parsed = pd.to_datetime(raw, errors="coerce")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    bad = parsed.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataValidationError(f"timestamp {raw.iloc[i]!r} cannot be parsed", source=source, column=TIME,
                                  cluster=str(table[ID].iloc[i]), row=int(table["_row"].iloc[i]))
    return parsed.to_numpy()


def _parse_numbers(raw: pd.Series, table: pd.DataFrame, column: str, source: str) -> np.ndarray:
    values = pd.to_numeric(raw, errors="coerce")
    not_numeric = values.isna() & raw.notna()
    if not_numeric.any():
        i = int(np.flatnonzero(not_numeric.to_numpy())[0])
        raise DataValidationError(f"value {raw.iloc[i]!r} is not a number", source=source, column=column,
                                  cluster=str(table[ID].iloc[i]), row=int(table["_row"].iloc[i]))
    values = values.astype(float).to_numpy()
    infinite = np.isinf(values)
    if infinite.any():
        i = int(np.flatnonzero(infinite)[0])
        raise DataValidationError("value is infinite", source=source, column=column,
                                  cluster=str(table[ID].iloc[i]), row=int(table["_row"].iloc[i]))
    return values


def _check_order(table: pd.DataFrame, source: str) -> None:
    """Timestamps must strictly increase within each cluster, in file order."""
    previous = table.groupby(ID, sort=False)[TIME].shift()
    previous_row = table.groupby(ID, sort=False)["_row"].shift()
    duplicate = table[TIME] == previous
    if duplicate.any():
        i = int(np.flatnonzero(duplicate.to_numpy())[0])
        raise DataValidationError(
            f"duplicated timestamp {table[TIME].iloc[i]} (also at row {int(previous_row.iloc[i])})",
            source=source, column=TIME, cluster=str(table[ID].iloc[i]), row=int(table["_row"].iloc[i]))
    backwards = table[TIME] < previous
    if backwards.any():
        i = int(np.flatnonzero(backwards.to_numpy())[0])
        raise DataValidationError(
            f"timestamps are not increasing: {table[TIME].iloc[i]} comes after {previous.iloc[i]} "
            f"(row {int(previous_row.iloc[i])})",
            source=source, column=TIME, cluster=str(table[ID].iloc[i]), row=int(table["_row"].iloc[i]))


def _infer_step(table: pd.DataFrame, freq: str | None, source: str) -> pd.Timedelta:
    """One step for all clusters: the declared frequency, else the smallest step seen.

    Each cluster's own smallest step must equal it, and every step must be a whole multiple of it
    (a multiple is a gap, anything else means the data mixes frequencies)."""
    diffs = table.groupby(ID, sort=False)[TIME].diff()
    if freq is not None:
        try:
            step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
        except (ValueError, TypeError) as exc:
            raise DataValidationError(f"frequency {freq!r} is not a fixed-length pandas frequency ({exc})",
                                      source=source) from None
    elif diffs.notna().any():
        step = diffs.min()
    else:
        raise DataValidationError("cannot infer the frequency from single-row clusters; declare freq",
                                  source=source, column=TIME)
    off_grid = diffs.notna() & ((diffs % step) != pd.Timedelta(0))
    per_cluster = diffs.groupby(table[ID], sort=False).min()
    other = per_cluster[per_cluster.notna() & (per_cluster != step)]
    if off_grid.any() or len(other):
        if off_grid.any():
            i = int(np.flatnonzero(off_grid.to_numpy())[0])
        else:
            i = int(np.flatnonzero(((table[ID] == other.index[0]) & (diffs == other.iloc[0])).to_numpy())[0])
        seen = per_cluster[per_cluster == step]
        elsewhere = f" (cluster {seen.index[0]!r} steps by {step})" if len(seen) and freq is None else ""
        raise DataValidationError(
            f"mixed frequencies: a step of {diffs.iloc[i]} where the panel's step is {step}{elsewhere}",
            source=source, column=TIME, cluster=str(table[ID].iloc[i]), row=int(table["_row"].iloc[i]))
    return step


def _on_grid(table: pd.DataFrame, step: pd.Timedelta) -> pd.DataFrame:
    """Insert the missing steps of each cluster as empty rows (they become gaps to fill or reject)."""
    position = ((table[TIME] - table.groupby(ID, sort=False)[TIME].transform("min")) // step).astype(np.int64)
    if (position.groupby(table[ID], sort=False).max() + 1 == table.groupby(ID, sort=False).size()).all():
        return table.reset_index(drop=True)
    parts = []
    for cluster, group in table.groupby(ID, sort=False):
        grid = pd.date_range(group[TIME].iloc[0], group[TIME].iloc[-1], freq=step)
        part = group.set_index(TIME).reindex(grid).rename_axis(TIME).reset_index()
        part[ID] = cluster
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _fill_gaps(
    table: pd.DataFrame, covariates: tuple[str, ...], past: tuple[str, ...],
    max_gap: int, source: str,
) -> pd.DataFrame:
    observed = table[DEMAND].notna()
    by_cluster = observed.groupby(table[ID], sort=False)
    started = by_cluster.cummax()
    if not started.groupby(table[ID], sort=False).any().all():
        empty = started.groupby(table[ID], sort=False).any()
        raise DataValidationError("cluster has no observed demand", source=source, column=DEMAND,
                                  cluster=str(empty[~empty].index[0]))
    # Rows after the last observation are future rows; rows before the first are dropped.
    not_ended = observed[::-1].groupby(table[ID][::-1], sort=False).cummax()[::-1]
    table = table[started].copy()
    history = not_ended[started].to_numpy()
    for column in (DEMAND, *covariates):
        table[column] = _interpolate_short_gaps(table, column, history, max_gap, source)
    for column in past:  # past-only values are unknown in the future, whatever the file says
        table.loc[~history, column] = np.nan
    return table[[ID, TIME, DEMAND, *covariates]].reset_index(drop=True)


def _interpolate_short_gaps(
    table: pd.DataFrame, column: str, history: np.ndarray, max_gap: int, source: str,
) -> pd.Series:
    """Fill runs of at most `max_gap` missing values that lie between two known values.

    Only history rows are checked: a future row's known-future covariate is checked by
    `Panel.require_future` against the horizon actually asked for."""
    values = table[column]
    missing = values.isna()
    if not (missing & history).any():
        return values
    block = (missing != missing.groupby(table[ID], sort=False).shift()).cumsum()
    run = missing.groupby([table[ID], block], sort=False).transform("sum")
    filled = values.groupby(table[ID], sort=False).transform(lambda s: s.interpolate(limit_area="inside"))
    bad = missing & history & ((run > max_gap) | filled.isna())
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        cluster = table[ID].iloc[i]
        before = table["_row"].iloc[:i][(table[ID].iloc[:i] == cluster).to_numpy()].dropna()
        after = f" (after row {int(before.iloc[-1])})" if len(before) else ""
        raise DataValidationError(
            f"{int(run.iloc[i])} missing step(s) from {table[TIME].iloc[i]}{after}; at most max_gap={max_gap} "
            f"consecutive steps between two known values are filled (linear interpolation)",
            source=source, column=column, cluster=str(cluster))
    return filled.where(run <= max_gap, values)

"""The newest forecast of each cluster, kept in memory for the routes that act on forecasts
(the plan route sizes pools from them without sampling again) and for the forecast-age metric."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.forecast import Forecast


@dataclass(frozen=True)
class CachedForecast:
    samples: np.ndarray  # [samples, horizon]
    start: pd.Timestamp
    freq: str
    model_version: str
    produced_at: float


class ForecastCache:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._entries: dict[str, CachedForecast] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self.latest_at: float | None = None
        # The last stacked view and the ids it covers: plans re-read the same forecasts until the next
        # put, and stacking 1,000 clusters' paths afresh (a new 38 MB array, page faults and all) cost
        # more than the plan's own arithmetic.
        self._stacked: Forecast | None = None

    def put(self, forecast: Forecast, model_version: str) -> None:
        now = self._clock()
        entries = {cluster: CachedForecast(forecast.samples[c], forecast.starts[c], forecast.freq, model_version, now)
                   for c, cluster in enumerate(forecast.cluster_ids)}
        with self._lock:
            self._entries.update(entries)
            self.latest_at = now
            self._stacked = None

    def cluster_ids(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def get(self, cluster_ids: Sequence[str] | None = None) -> Forecast:
        """One `Forecast` over `cluster_ids` (default: every cached cluster).

        Raises KeyError naming a cluster with no forecast, ValueError when the cached forecasts
        cannot be stacked (different sample counts, horizons or frequencies)."""
        with self._lock:
            ids = list(self._entries) if cluster_ids is None else list(cluster_ids)
            stacked = self._stacked
            if stacked is not None and stacked.cluster_ids == ids:
                return stacked
            missing = [c for c in ids if c not in self._entries]
            if missing:
                raise KeyError(f"no forecast for cluster {missing[0]!r} ({len(missing)} missing); POST /v1/forecast first")
            entries = [self._entries[c] for c in ids]
        if not entries:
            raise KeyError("no forecasts yet; POST /v1/forecast first")
        shapes = {e.samples.shape for e in entries}
        freqs = {e.freq for e in entries}
        if len(shapes) > 1 or len(freqs) > 1:
            raise ValueError(f"cached forecasts differ in shape {sorted(shapes)} or frequency {sorted(freqs)}; "
                             "forecast these clusters together in one request")
        forecast = Forecast(ids, pd.DatetimeIndex([e.start for e in entries]), entries[0].freq,
                            np.stack([e.samples for e in entries]))
        with self._lock:
            if all(self._entries.get(c) is e for c, e in zip(ids, entries, strict=True)):  # no put in between
                self._stacked = forecast
        return forecast

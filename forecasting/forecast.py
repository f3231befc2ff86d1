"""The `Forecast` value type: the seam between forecasting and the allocator.

It carries joint sample paths, not just quantiles, because a shared shadow pool must be sized
from the distribution of the *sum* of demand across clusters, which marginal quantiles cannot give.
Only numpy and pandas here: the allocator and the serving path import this module.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from forecasting.files import atomic_path

if TYPE_CHECKING:
    from forecasting.data import Panel

DEFAULT_QUANTILES: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class Forecast:
    """Per-cluster sample paths of future demand.

    `samples[c, s, h]` is the demand of cluster `cluster_ids[c]` in sample path `s` at step `h`,
    in demand units. Keeping paths (not just quantiles) lets consumers take quantiles of sums over
    steps and clusters. Whether path `s` of two clusters is correlated depends on the forecaster:
    DeepAR draws clusters independently given their inputs (shared covariates still move them
    together); a forecaster that couples clusters can encode their joint spikes in the index `s`.
    `starts[c]` is the first forecast timestamp of cluster `c` (series may end at different times).
    """

    cluster_ids: list[str]
    starts: pd.DatetimeIndex
    freq: str
    samples: np.ndarray

    def __post_init__(self) -> None:
        if self.samples.ndim != 3:
            raise ValueError(f"samples must be [clusters, samples, horizon], got shape {self.samples.shape}")
        if self.samples.shape[0] != len(self.cluster_ids):
            raise ValueError(
                f"samples has {self.samples.shape[0]} clusters but cluster_ids has {len(self.cluster_ids)}"
            )
        if len(self.starts) != len(self.cluster_ids):
            raise ValueError(f"starts has {len(self.starts)} entries for {len(self.cluster_ids)} clusters")
        if self.samples.shape[1] < 1 or self.samples.shape[2] < 1:
            raise ValueError(f"samples needs at least one path and one step, got shape {self.samples.shape}")

    @classmethod
    def aligned(cls, cluster_ids: Sequence[str], start: pd.Timestamp, freq: str, samples: np.ndarray) -> Forecast:
        """A forecast whose clusters all start at the same timestamp (the live-system case)."""
        return cls(list(cluster_ids), pd.DatetimeIndex([pd.Timestamp(start)] * len(cluster_ids)), freq, samples)

    @property
    def horizon(self) -> int:
        return int(self.samples.shape[2])

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[1])

    @property
    def start(self) -> pd.Timestamp:
        """The common first forecast step; raises when clusters start at different times."""
        if (self.starts != self.starts[0]).any():
            raise ValueError("clusters start at different timestamps; use `starts`")
        return self.starts[0]

    def quantile(self, q: float | Sequence[float]) -> np.ndarray:
        """Sample quantiles: `[clusters, horizon]` for one level, `[levels, clusters, horizon]` for several."""
        levels = np.atleast_1d(np.asarray(q, dtype=float))
        if ((levels < 0) | (levels > 1)).any():
            raise ValueError(f"quantile levels must lie in [0, 1], got {levels.tolist()}")
        result = np.quantile(self.samples, levels, axis=1)
        return result[0] if np.ndim(q) == 0 else result

    def mean(self) -> np.ndarray:
        """`[clusters, horizon]` mean of the sample paths."""
        return self.samples.mean(axis=1)

    def index_of(self, cluster_id: str) -> int:
        try:
            return self.cluster_ids.index(cluster_id)
        except ValueError:
            raise KeyError(f"cluster {cluster_id!r} is not in this forecast") from None

    def select(self, cluster_ids: Sequence[str]) -> Forecast:
        rows = [self.index_of(c) for c in cluster_ids]
        return Forecast(list(cluster_ids), self.starts[rows], self.freq, self.samples[rows])

    def timestamps(self, cluster: int) -> pd.DatetimeIndex:
        return pd.date_range(self.starts[cluster], periods=self.horizon, freq=self.freq)

    def to_frame(self, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> pd.DataFrame:
        """Long table: one row per cluster and step with `mean` and one `q<level>` column per quantile."""
        levels = list(quantiles)
        qs = self.quantile(levels) if levels else np.empty((0, *self.samples.shape[::2]))
        means = self.mean()
        frames = []
        for c, cluster in enumerate(self.cluster_ids):
            frame = pd.DataFrame({"cluster_id": cluster, "timestamp": self.timestamps(c), "mean": means[c]})
            for i, level in enumerate(levels):
                frame[quantile_column(level)] = qs[i, c]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def save(self, path: str | Path) -> None:
        """Write samples and metadata to one `.npz` file, atomically."""
        meta = {"cluster_ids": self.cluster_ids, "starts": [str(s) for s in self.starts], "freq": self.freq}
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, samples=self.samples, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | Path) -> Forecast:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return cls(meta["cluster_ids"], pd.DatetimeIndex(meta["starts"]), meta["freq"], data["samples"])


def quantile_column(level: float) -> str:
    """Column name for a quantile level: 0.05 → `q0.05`, 0.5 → `q0.5`."""
    return f"q{level:g}"


class Forecaster(Protocol):
    """Anything that learns from a panel and returns joint sample paths for each of its clusters."""

    def fit(self, panel: Panel) -> None: ...

    def predict(self, panel: Panel, horizon: int, num_samples: int) -> Forecast: ...

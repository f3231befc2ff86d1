"""Peers behind the `Forecaster` protocol: seasonal naive and its probabilistic cousin, and an
adapter over GluonTS's own DeepAR.

The seasonal ones are cheap, need no training and are the yardstick every model must beat;
GluonTS's DeepAR is the reference implementation our DeepAR is measured against.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd

from forecasting.data import DEMAND, ID, TIME, Panel
from forecasting.forecast import Forecast
from forecasting.seasonality import season_length


def _histories(panel: Panel) -> list[np.ndarray]:
    """Observed demand per cluster, in the panel's cluster order (no group-by for one cluster: the
    simulator asks for a forecast every step, and grouping costs more than the forecast)."""
    history = panel.history()
    if len(panel.cluster_ids) == 1:
        return [history[DEMAND].to_numpy(dtype=float)]
    return [g[DEMAND].to_numpy(dtype=float) for _, g in history.groupby(ID, sort=False)]


def _starts(panel: Panel) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(panel.last_observed().to_numpy()) + panel.step


def _repeat_last_season(history: np.ndarray, period: int, horizon: int) -> np.ndarray:
    """Repeat the last `period` values over the horizon (the last value when history is shorter)."""
    if len(history) < period:
        return np.full(horizon, history[-1])
    last = history[-period:]
    return np.resize(last, horizon) if horizon > period else last[:horizon].copy()


class SeasonalNaive:
    """Each future step equals the value one season earlier. A point forecast: all paths coincide."""

    def __init__(self, period: int | None = None) -> None:
        self.period = period

    def fit(self, panel: Panel) -> None:  # nothing to learn
        return None

    def predict(self, panel: Panel, horizon: int, num_samples: int = 1) -> Forecast:
        period = self.period or season_length(panel.freq)
        points = np.stack([_repeat_last_season(h, period, horizon) for h in _histories(panel)])
        samples = np.repeat(points[:, None, :], num_samples, axis=1)
        return Forecast(panel.cluster_ids, _starts(panel), panel.freq, samples)


class SeasonalBootstrap:
    """Seasonal naive plus errors resampled from the history's own seasonal-naive errors.

    A sample path adds, to each step's seasonal-naive value, the error seen at one randomly chosen
    past time, scaled to that time's level; the same past times are used for every cluster in a
    path, so paths keep the cross-cluster correlation of the errors. Cheap and well calibrated on
    stationary traces; it cannot anticipate known-future events.
    """

    def __init__(self, period: int | None = None, window: int | None = None, seed: int = 0) -> None:
        self.period, self.window, self.seed = period, window, seed

    def fit(self, panel: Panel) -> None:
        return None

    def predict(self, panel: Panel, horizon: int, num_samples: int = 100) -> Forecast:
        period = self.period or season_length(panel.freq)
        histories = _histories(panel)
        points = np.stack([_repeat_last_season(h, period, horizon) for h in histories])
        # Relative errors of "same value one season ago, `lead` steps ahead", per cluster and time.
        span = min(len(h) for h in histories)
        window = min(self.window or 8 * period, span - period - 1)
        if window < 1:
            return SeasonalNaive(period).predict(panel, horizon, num_samples)
        rng = np.random.default_rng(self.seed)
        picks = rng.integers(0, window, size=(num_samples, horizon))
        samples = np.empty((len(histories), num_samples, horizon))
        for c, h in enumerate(histories):
            recent = h[-window:]
            earlier = h[-window - period:-period]
            ratio = (recent + 1e-9) / (earlier + 1e-9) if (h >= 0).all() else None
            if ratio is not None:
                samples[c] = points[c][None, :] * np.clip(ratio, 0.0, 50.0)[picks]
            else:  # quantities that can be negative: additive errors
                samples[c] = points[c][None, :] + (recent - earlier)[picks]
        return Forecast(panel.cluster_ids, _starts(panel), panel.freq, samples)


class AnalogBootstrap:
    """Sample paths from the past moments most like now (an analog ensemble), for short horizons.

    Work in log(1 + demand). The *level* at a step is the mean of the last `smooth` values; a past
    step τ is described by how its level changed over several look-backs (1, 2, 4, … up to `match`
    steps: short and longer trends) and by its phase in the season (time of day). The `neighbours`
    past steps τ of the last `window` closest to now are resampled, and each path is the current
    level plus what followed τ relative to τ's level: level_now + log(1 + y[τ+h]) − level_τ. Anchoring
    on levels rather than on the last value keeps one noisy minute from moving the whole forecast.
    Clusters that end at the same time share their τ draws, so paths keep the cross-cluster
    correlation of what happened then. No training; good at the minutes-to-hours leads a pool
    needs; it cannot foresee a spike nothing in the recent past hints at.
    """

    def __init__(self, window: int | None = None, match: int = 30, smooth: int = 3, neighbours: int = 60,
                 phase_weight: float = 1.0, period: int | None = None, seed: int = 0) -> None:
        if match < 1 or neighbours < 1 or smooth < 1:
            raise ValueError("match, smooth and neighbours must be >= 1")
        self.window, self.match, self.smooth, self.neighbours = window, match, smooth, neighbours
        self.phase_weight, self.period, self.seed = phase_weight, period, seed
        self.lags = np.unique(np.geomspace(1, match, num=max(1, int(np.log2(match)) + 1)).round().astype(int))
        self._calls = 0

    def fit(self, panel: Panel) -> None:
        return None

    def predict(self, panel: Panel, horizon: int, num_samples: int = 100) -> Forecast:
        period = self.period or season_length(panel.freq)
        window = self.window or 14 * period
        histories = _histories(panel)
        ends = panel.last_observed()
        rng = np.random.default_rng([self.seed, self._calls])
        self._calls += 1
        samples = np.empty((len(histories), num_samples, horizon))
        aligned = len(set(ends.to_numpy())) == 1 and len({len(h) for h in histories}) == 1
        groups = [list(range(len(histories)))] if aligned else [[c] for c in range(len(histories))]
        for group in groups:
            logs = np.log1p(np.maximum(np.stack([histories[c] for c in group]), 0.0))
            levels = self._levels(logs)
            picks = self._analogs(levels, horizon, window, period, num_samples, rng)
            for i, c in enumerate(group):
                if picks is None:  # too short to learn from: carry the last value forward
                    samples[c] = histories[c][-1]
                    continue
                growth = logs[i, picks[:, None] + np.arange(1, horizon + 1)] - levels[i, picks][:, None]
                samples[c] = np.expm1(levels[i, -1] + growth).clip(min=0.0)
        starts = pd.DatetimeIndex(ends.to_numpy()) + panel.step
        return Forecast(panel.cluster_ids, starts, panel.freq, samples)

    def _levels(self, logs: np.ndarray) -> np.ndarray:
        """Trailing mean of the last `smooth` values (fewer at the very start)."""
        sums = np.cumsum(logs, axis=1)
        k = self.smooth
        out = sums / np.arange(1, logs.shape[1] + 1)
        if logs.shape[1] > k:
            out[:, k:] = (sums[:, k:] - sums[:, :-k]) / k
        return out

    def _analogs(self, levels: np.ndarray, horizon: int, window: int, period: int, count: int,
                 rng: np.random.Generator) -> np.ndarray | None:
        """Indices τ of the chosen analogs (`[count]`), or None when history is too short."""
        n = levels.shape[1]
        reach = int(self.lags.max())
        first = max(reach, n - 1 - horizon - window)
        candidates = np.arange(first, n - horizon)
        if len(candidates) < 1:
            return None
        lags = self.lags
        now = levels[:, -1:] - levels[:, n - 1 - lags]  # [clusters, lags]
        past = levels[:, candidates, None] - levels[:, candidates[:, None] - lags[None, :]]  # [clusters, cand, lags]
        distance = ((past - now[:, None, :]) ** 2).mean(axis=(0, 2))
        phase = np.abs((candidates - (n - 1)) % period) / period
        distance = distance + self.phase_weight * np.minimum(phase, 1 - phase) ** 2
        k = min(self.neighbours, len(candidates))
        nearest = np.argpartition(distance, k - 1)[:k]
        return candidates[rng.choice(nearest, size=count, replace=True)]


class GluonTSDeepAR:
    """GluonTS's own torch DeepAR (`gluonts.torch.model.deepar.DeepAREstimator`) behind our protocol:
    the reference implementation our model is measured against.

    Panel → GluonTS dataset: one entry per cluster, its id as `feat_static_cat` (cardinality = the
    number of clusters seen in `fit`); known-future covariates as `feat_dynamic_real`, standardised
    with the fit panel's means and spreads. This DeepAR has no input for past-only covariates
    (`past_feat_dynamic_real` would be silently dropped by its transformation), so with
    `past_covariates="lagged"` each one enters `feat_dynamic_real` shifted by `prediction_length`
    steps — a value that is always known over the horizon — and with `"ignore"` it is left out.

    Sample `s` of each cluster is GluonTS's sample `s` for that series; GluonTS draws series
    independently, so these paths carry no cross-cluster correlation (nor do our DeepAR's).
    GluonTS is imported inside the methods: it costs seconds and the CLI must start fast.
    """

    def __init__(
        self,
        prediction_length: int,
        *,
        context_length: int | None = None,
        num_layers: int = 2,
        hidden_size: int = 40,
        dropout_rate: float = 0.1,
        batch_size: int = 32,
        num_batches_per_epoch: int = 50,
        max_epochs: int = 100,
        max_steps: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-8,
        patience: int = 10,
        num_parallel_samples: int = 100,
        cache_data: bool = True,
        past_covariates: str = "lagged",
        seed: int = 0,
        num_threads: int | None = None,
        trainer_kwargs: dict | None = None,
    ) -> None:
        for name, value in (("prediction_length", prediction_length), ("num_layers", num_layers),
                            ("hidden_size", hidden_size), ("batch_size", batch_size),
                            ("num_batches_per_epoch", num_batches_per_epoch), ("max_epochs", max_epochs),
                            ("num_parallel_samples", num_parallel_samples)):
            if value < 1:
                raise ValueError(f"GluonTSDeepAR: {name} must be >= 1, got {value}")
        if context_length is not None and context_length < 1:
            raise ValueError(f"GluonTSDeepAR: context_length must be >= 1, got {context_length}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"GluonTSDeepAR: max_steps must be >= 1, got {max_steps}")
        if lr <= 0:
            raise ValueError(f"GluonTSDeepAR: lr must be > 0, got {lr}")
        if past_covariates not in ("lagged", "ignore"):
            raise ValueError(f"GluonTSDeepAR: past_covariates must be 'lagged' or 'ignore', got {past_covariates!r}")
        self.prediction_length, self.context_length = prediction_length, context_length
        self.num_layers, self.hidden_size, self.dropout_rate = num_layers, hidden_size, dropout_rate
        self.batch_size, self.num_batches_per_epoch = batch_size, num_batches_per_epoch
        self.max_epochs, self.max_steps = max_epochs, max_steps
        self.lr, self.weight_decay, self.patience = lr, weight_decay, patience
        self.num_parallel_samples, self.cache_data = num_parallel_samples, cache_data
        self.past_covariates, self.seed, self.num_threads = past_covariates, seed, num_threads
        self.trainer_kwargs = dict(trainer_kwargs or {})
        self.predictor = None
        self.train_seconds = 0.0
        self._vocab: dict[str, int] = {}
        self._scaling: dict[str, tuple[float, float]] = {}
        self._freq: str | None = None

    def fit(self, panel: Panel) -> GluonTSDeepAR:
        import tempfile
        import time

        import lightning.pytorch as pl
        import torch

        with _quiet_gluonts():  # its import warns about a missing optional JSON library
            from gluonts.torch.model.deepar import DeepAREstimator
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        pl.seed_everything(self.seed, verbose=False)
        self._freq = panel.freq
        self._vocab = {c: i for i, c in enumerate(panel.cluster_ids)}
        history = panel.history()
        self._scaling = {}
        for column in self._dynamic_columns(panel):
            values = history[column].to_numpy(dtype=float)
            self._scaling[column] = (float(values.mean()), float(values.std()) or 1.0)
        with tempfile.TemporaryDirectory(prefix="gluonts-deepar-") as scratch, _quiet_gluonts():
            trainer = {"max_epochs": self.max_epochs, "max_steps": self.max_steps or -1, "accelerator": "cpu",
                       "devices": 1, "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                       # GluonTS always adds a checkpoint callback: keep its files out of the working tree
                       "default_root_dir": scratch,
                       **self.trainer_kwargs}
            estimator = DeepAREstimator(
                freq=panel.freq, prediction_length=self.prediction_length, context_length=self.context_length,
                num_layers=self.num_layers, hidden_size=self.hidden_size, dropout_rate=self.dropout_rate,
                lr=self.lr, weight_decay=self.weight_decay, patience=self.patience,
                num_feat_dynamic_real=len(self._scaling), num_feat_static_cat=1, cardinality=[len(self._vocab)],
                num_parallel_samples=self.num_parallel_samples, batch_size=self.batch_size,
                num_batches_per_epoch=self.num_batches_per_epoch, nonnegative_pred_samples=not panel.allow_negative,
                trainer_kwargs=trainer)
            started = time.perf_counter()
            self.predictor = estimator.train(self._entries(panel, future=0), cache_data=self.cache_data)
            self.train_seconds = time.perf_counter() - started
        return self

    def predict(self, panel: Panel, horizon: int, num_samples: int = 100) -> Forecast:
        import torch

        if self.predictor is None:
            raise RuntimeError("call fit() before predict()")
        if horizon != self.prediction_length:
            raise ValueError(f"GluonTSDeepAR was trained for prediction_length={self.prediction_length}; "
                             f"asked for a horizon of {horizon}")
        if pd.tseries.frequencies.to_offset(panel.freq) != pd.tseries.frequencies.to_offset(self._freq):
            raise ValueError(f"{panel.source}: frequency {panel.freq!r} differs from the fitted {self._freq!r}")
        unknown = [c for c in panel.cluster_ids if c not in self._vocab]
        if unknown:
            raise ValueError(f"{panel.source}: clusters {unknown[:5]} were not in the panel "
                             f"GluonTSDeepAR was fitted on")
        missing = [c for c in self._scaling if c not in panel.frame.columns]
        if missing:
            raise ValueError(f"{panel.source}: GluonTSDeepAR was fitted with covariates {missing}; the data lacks them")
        panel.require_future(horizon)
        torch.manual_seed(self.seed)
        with _quiet_gluonts():
            forecasts = {f.item_id: f.samples for f in self.predictor.predict(self._entries(panel, future=horizon),
                                                                              num_samples=num_samples)}
        samples = np.stack([forecasts[c] for c in panel.cluster_ids]).astype(np.float64)
        return Forecast(panel.cluster_ids, _starts(panel), panel.freq, samples)

    def _dynamic_columns(self, panel: Panel) -> list[str]:
        lagged = list(panel.past_covariates) if self.past_covariates == "lagged" else []
        return list(panel.known_covariates) + lagged

    def _entries(self, panel: Panel, future: int) -> list[dict]:
        """One GluonTS data entry per cluster: `target` over the history, dynamic features over the
        history plus `future` steps."""
        entries = []
        for cluster, group in panel.frame.groupby(ID, sort=False):
            observed = group[DEMAND].notna().to_numpy()
            length = int(observed.sum())
            entry = {"item_id": cluster, "start": pd.Period(group[TIME].iloc[0], freq=panel.freq),
                     "target": group[DEMAND].to_numpy(dtype=np.float32)[:length],
                     "feat_static_cat": np.array([self._vocab[cluster]], dtype=np.int64)}
            if self._scaling:
                rows = []
                for column, (mean, std) in self._scaling.items():
                    values = group[column].to_numpy(dtype=float)
                    if column in panel.past_covariates:  # past-only: shift so every value is already known
                        known = values[:length]
                        values = np.concatenate([np.full(self.prediction_length, known[0]), known])
                    rows.append((values[:length + future] - mean) / std)
                entry["feat_dynamic_real"] = np.stack(rows).astype(np.float32)
            entries.append(entry)
        return entries


@contextlib.contextmanager
def _quiet_gluonts() -> Iterator[None]:
    """GluonTS's checkpoint callback and Lightning's banners log every epoch; keep warnings only."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning", "gluonts")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*orjson.*")
            warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
            warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*non-tuple sequence for multidimensional indexing.*")
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)

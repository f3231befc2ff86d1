"""Online correction of quantile levels from realised coverage (adaptive conformal inference).

A forecaster whose 0.965 quantile is exceeded 20 % of the time is over-confident; one exceeded
0.1 % of the time wastes shadows. Following Gibbs & Candès ("Adaptive Conformal Inference Under
Distribution Shift", NeurIPS 2021), each tracked level moves after every outcome by

    depth ← clip(depth + γ · (miss − (1 − target)), lower, upper)

a miss pushing it up by γ·target, a hit pulling it down by γ·(1 − target), so that the long-run
miss rate tends to 1 − target whatever the forecaster's bias, provided the needed level lies inside
the bounds: over T outcomes |miss rate − (1 − target)| ≤ (upper − lower + γ) / (γ·T), in depth units.

The update runs on the *tail depth* −log(1 − level) rather than on the level itself: the levels a
pool needs (0.99, 0.9999, …) crowd against 1, where a fixed step in level is either too coarse or
too fine; on the depth scale one step is a fixed change in how far into the tail the quantile
reaches, and beyond the samples (`allocator.policy.quantile_of_sorted`) a fixed fraction of the
forecast's spread. The bounds keep a run of bad luck from driving the pool to nothing or to infinity.

Pure numpy, vectorised: one tracker array covers many (policy variant, cluster) pairs at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allocator.policy import MAX_LEVEL


def depth(level: np.ndarray | float) -> np.ndarray:
    """Tail depth −log(1 − level): 0.9 → 2.3, 0.99 → 4.6, 0.9999 → 9.2."""
    return -np.log1p(-np.asarray(level, dtype=float))


def level_of(tail_depth: np.ndarray | float) -> np.ndarray:
    return -np.expm1(-np.asarray(tail_depth, dtype=float))


@dataclass(frozen=True)
class CalibrationSettings:
    step_size: float = 0.5  # γ, in tail-depth units: larger corrects faster and jitters more
    lower: float = 0.01  # level bounds
    upper: float = MAX_LEVEL

    def __post_init__(self) -> None:
        if not 0 < self.step_size <= 10:
            raise ValueError(f"calibration step_size must lie in (0, 10], got {self.step_size}")
        if not 0 < self.lower < self.upper <= MAX_LEVEL:
            raise ValueError(f"calibration bounds must satisfy 0 < lower < upper <= {MAX_LEVEL}, "
                             f"got {self.lower} and {self.upper}")


class AdaptiveLevel:
    """Quantile levels corrected from observed misses (demand above the level's quantile)."""

    def __init__(self, target: np.ndarray | float, settings: CalibrationSettings = CalibrationSettings()) -> None:
        self.settings = settings
        self.target = np.clip(np.asarray(target, dtype=float), settings.lower, settings.upper)
        self._bounds = depth(settings.lower), depth(settings.upper)
        self.depth = depth(self.target)
        self.outcomes = 0
        self.misses = np.zeros_like(self.depth)

    @property
    def level(self) -> np.ndarray:
        return level_of(self.depth)

    def update(self, miss: np.ndarray, observed: np.ndarray | bool = True) -> np.ndarray:
        """Record one outcome per tracker (`observed` false: no outcome yet, level unchanged)."""
        miss = np.asarray(miss, dtype=float)
        seen = np.asarray(observed, dtype=float)
        step = self.settings.step_size * (miss - (1 - self.target)) * seen
        self.depth = np.clip(self.depth + step, *self._bounds)
        self.misses = self.misses + miss * seen
        self.outcomes += 1
        return self.level

    def miss_rate_bound(self, steps: int) -> float:
        """Worst-case distance of the realised miss rate from its target after `steps` outcomes."""
        low, high = self._bounds
        return float((high - low + self.settings.step_size) / (self.settings.step_size * max(steps, 1)))


def steps_to_reach(start: float, needed: float, target: float, step_size: float) -> int:
    """Steps a tracker starting at level `start` takes to reach level `needed` if it missed every time.

    A lower bound on the correction time: each miss deepens the level by step_size · target.
    """
    gap = float(depth(needed) - depth(start))
    return 0 if gap <= 0 else int(np.ceil(gap / (step_size * target)))

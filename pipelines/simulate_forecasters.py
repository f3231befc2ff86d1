"""Forecasters the simulator can replay, by name.

`make_forecaster("deepar", options)` imports `forecasting.estimator` only when asked for (torch and
Lightning cost seconds to import; the other forecasters need neither).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from forecasting.baselines import AnalogBootstrap
from forecasting.forecast import Forecaster


def _seasonal_bootstrap(options: dict[str, Any]) -> Forecaster:
    from forecasting.baselines import SeasonalBootstrap

    return SeasonalBootstrap(**options)


def _seasonal_naive(options: dict[str, Any]) -> Forecaster:
    from forecasting.baselines import SeasonalNaive

    return SeasonalNaive(**options)


def _deepar(options: dict[str, Any]) -> Forecaster:
    from forecasting.estimator import DeepARForecaster  # torch + Lightning: only when asked for

    return DeepARForecaster(options)


FORECASTERS: dict[str, Callable[[dict[str, Any]], Forecaster]] = {
    "seasonal-bootstrap": _seasonal_bootstrap,
    "seasonal-naive": _seasonal_naive,
    "analog-bootstrap": lambda options: AnalogBootstrap(**options),
    "deepar": _deepar,
}


def make_forecaster(name: str, options: dict[str, Any] | None = None) -> Forecaster:
    if name not in FORECASTERS:
        raise ValueError(f"forecaster.name: unknown forecaster {name!r}; choose one of {sorted(FORECASTERS)}")
    try:
        return FORECASTERS[name](dict(options or {}))
    except TypeError as exc:  # an option the forecaster does not take
        raise ValueError(f"forecaster.options for {name!r}: {exc}") from None

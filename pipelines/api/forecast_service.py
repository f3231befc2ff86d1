"""What `POST /v1/forecast` does, as plain functions: request → validated panel → forecast → body.

Bad input never reaches the model unvalidated: the request's table goes through the data contract
(`forecasting.data.validate_panel`), and any contract violation becomes a `RequestError` whose
`loc` points into the JSON body (`["body", "rows", 17, "demand"]` or
`["body", "columns", "demand", 17]`), which the API answers as 422.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from forecasting.data import DEMAND, ID, TIME, DataValidationError, Panel, validate_panel
from forecasting.forecast import Forecast, quantile_column
from pipelines.api.model_holder import LoadedModel
from pipelines.api.schemas import ClusterForecast, ForecastRequest, ForecastResponse
from pipelines.api.settings import ForecastLimits

SOURCE = "request body"


class RequestError(ValueError):
    """The request is well-formed JSON but its content is unusable; answered as 422."""

    def __init__(self, message: str, loc: Sequence[str | int], kind: str = "value_error",
                 cluster: str | None = None) -> None:
        super().__init__(message)
        self.loc, self.kind, self.cluster = list(loc), kind, cluster

    def as_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {"loc": self.loc, "msg": str(self), "type": self.kind}
        if self.cluster is not None:
            item["cluster"] = self.cluster
        return item


def check_limits(request: ForecastRequest, limits: ForecastLimits) -> None:
    for field, value, cap in (("horizon", request.horizon, limits.max_horizon),
                              ("num_samples", request.num_samples, limits.max_samples)):
        if value > cap:
            raise RequestError(f"{field} {value} is over this server's limit of {cap}", ["body", field],
                               "limit_exceeded")
    rows = len(request.rows) if request.rows is not None else len(request.columns.cluster_id)
    if rows > limits.max_rows:
        raise RequestError(f"{rows} rows is over this server's limit of {limits.max_rows}",
                           ["body", _table_name(request)], "limit_exceeded")


def request_panel(request: ForecastRequest, known: Sequence[str], past: Sequence[str], freq: str,
                  limits: ForecastLimits) -> Panel:
    """The request's table as a validated panel with the model's covariates and frequency."""
    table = _columns(request)
    covariates = set(known) | set(past)
    unknown = sorted(set(table) - {ID, TIME, DEMAND} - covariates)
    if unknown:
        raise RequestError(f"unknown covariate {unknown[0]!r}: the model uses {sorted(covariates) or 'none'}",
                           ["body", _table_name(request), unknown[0]], "unknown_covariate")
    _check_size(len(set(table[ID])), request, limits)  # before any work on the table
    frame = pd.DataFrame(table)
    for column in covariates - set(frame.columns):
        frame[column] = np.nan  # a covariate no row mentions: the contract reports it as missing
    try:
        return validate_panel(frame, source=SOURCE, known_covariates=known, past_covariates=past, freq=freq,
                              max_gap=limits.max_gap)
    except DataValidationError as exc:
        raise _located(exc, request) from None


def _check_size(clusters: int, request: ForecastRequest, limits: ForecastLimits) -> None:
    if clusters > limits.max_clusters:
        raise RequestError(f"{clusters} clusters is over this server's limit of {limits.max_clusters}",
                           ["body", _table_name(request)], "limit_exceeded")
    values = clusters * request.num_samples * request.horizon
    if values > limits.max_sample_values:
        raise RequestError(f"clusters × num_samples × horizon = {values} is over this server's limit of "
                           f"{limits.max_sample_values}; ask for fewer samples or split the clusters",
                           ["body", "num_samples"], "limit_exceeded")


def forecast(model: LoadedModel, panel: Panel, request: ForecastRequest) -> Forecast:
    try:
        model.predictor.check_panel(panel)
        panel.require_future(request.horizon)
    except DataValidationError as exc:
        raise _located(exc, request) from None
    except ValueError as exc:  # frequency or covariates that do not fit the model
        raise RequestError(str(exc), ["body", _table_name(request)]) from None
    return model.predict(panel.truncate_future(request.horizon), request.horizon, request.num_samples,
                         seed=request.seed)


def response_body(result: Forecast, model_version: str, levels: Sequence[float], include_samples: bool) -> bytes:
    """The JSON response, serialised by pydantic-core (the lists are built with numpy's `tolist`,
    which is where the time would otherwise go for large sample arrays)."""
    levels = sorted(set(levels))
    quantiles = result.quantile(levels)  # [levels, clusters, horizon]
    means = result.mean()
    names = [quantile_column(q) for q in levels]
    forecasts = [
        ClusterForecast.model_construct(
            cluster_id=cluster, start=result.starts[c].to_pydatetime(), mean=means[c].tolist(),
            quantiles={name: quantiles[i, c].tolist() for i, name in enumerate(names)},
            samples=result.samples[c].tolist() if include_samples else None)
        for c, cluster in enumerate(result.cluster_ids)
    ]
    body = ForecastResponse.model_construct(model_version=model_version, freq=result.freq, horizon=result.horizon,
                                            num_samples=result.num_samples, quantile_levels=levels,
                                            forecasts=forecasts)
    return body.model_dump_json(exclude_none=True).encode()


def _columns(request: ForecastRequest) -> dict[str, list[Any]]:
    if request.columns is not None:
        return request.columns.as_dict()
    rows = request.rows
    table: dict[str, list[Any]] = {ID: [r.cluster_id for r in rows], TIME: [r.timestamp for r in rows],
                                   DEMAND: [r.demand for r in rows]}
    for name in sorted({key for r in rows for key in (r.model_extra or {})}):
        table[name] = [(r.model_extra or {}).get(name) for r in rows]
    return table


def _table_name(request: ForecastRequest) -> str:
    return "rows" if request.rows is not None else "columns"


def _located(exc: DataValidationError, request: ForecastRequest) -> RequestError:
    """Point a data-contract error at the JSON: the contract counts data rows from 1, JSON from 0."""
    message = str(exc).removeprefix(f"{SOURCE}: ").removeprefix(SOURCE)
    loc: list[str | int] = ["body", _table_name(request)]
    index = exc.row - 1 if exc.row is not None else None
    if request.rows is not None:
        loc += [x for x in (index, exc.column) if x is not None]
    else:
        loc += [x for x in (exc.column, index) if x is not None]
    return RequestError(message.lstrip(", ").strip(), loc, "data_contract", exc.cluster)

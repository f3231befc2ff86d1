"""Demand from Prometheus: range queries (`/api/v1/query_range`) turned into a validated panel.

One query gives demand: each returned series is one cluster, named by its `cluster_label` label.
Each covariate has its own query; a covariate series carries the same cluster label, or no
label at all (then it applies to every cluster, as a calendar or a region-wide figure does).
Covariates are past-only (observed usage, queried up to `end`) or known-future (queried
`future_steps` steps past `end` too: anything Prometheus can evaluate ahead of time, such as
`hour()` arithmetic or a recording rule of scheduled events). The query step is the panel's
frequency; the range is aligned to whole steps so the same settings give the same grid.

Configured under `data:` as `source: prometheus` with a `prometheus:` section (`PrometheusSource`).
Only pydantic and the standard library load with this module (settings import its config model);
httpx, numpy and pandas load when a panel is fetched.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    import httpx
    import pandas as pd

    from forecasting.data import Panel

ID, TIME, DEMAND = "cluster_id", "timestamp", "demand"  # the data contract's columns (forecasting.data)

MAX_POINTS = 10_000  # per series and request; Prometheus refuses more than 11,000
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class PrometheusError(ValueError):
    """Prometheus could not be reached, refused a query, or returned nothing usable."""


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as `15s`, `1h30m`, `7d`."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a Prometheus duration (e.g. 30s, 5m, 1h, 7d, 1h30m)")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


class PrometheusCovariate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Column name in the panel.")
    query: str = Field(min_length=1)
    known_future: bool = False  # true: also queried over the next `future_steps` steps


class PrometheusSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "http://127.0.0.1:9090"
    demand_query: str = Field(min_length=1)
    cluster_label: str = "cluster"
    step: str = "1h"  # Prometheus duration; also the panel's frequency
    lookback: str = "28d"  # history to fetch, ending at `end`
    end: datetime | None = None  # default: now; both ends are aligned to whole steps
    future_steps: int = Field(0, ge=0)  # rows of known-future covariates after `end` (the horizon)
    covariates: list[PrometheusCovariate] = []
    timeout_s: float = Field(30.0, gt=0)
    bearer_token_env: str | None = None  # name of an environment variable holding a bearer token

    @field_validator("step", "lookback")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be longer than zero")
        return value

    @field_validator("covariates")
    @classmethod
    def _distinct(cls, covariates: list[PrometheusCovariate]) -> list[PrometheusCovariate]:
        names = [c.name for c in covariates]
        clash = sorted({n for n in names if names.count(n) > 1} | ({ID, TIME, DEMAND} & set(names)))
        if clash:
            raise ValueError(f"covariate names must be distinct and not {[ID, TIME, DEMAND]}: {clash}")
        return covariates


def load_prometheus_panel(config: PrometheusSource, *, max_gap: int = 3, now: float | None = None,
                          client: httpx.Client | None = None) -> Panel:
    """Query demand and covariates over `[end - lookback, end]` and validate them as a panel."""
    import httpx
    import pandas as pd

    from forecasting.data import validate_panel

    step = parse_duration(config.step)
    if config.end is not None:  # a naive `end` is UTC, like every timestamp in a panel
        end = config.end.replace(tzinfo=config.end.tzinfo or timezone.utc).timestamp()
    else:
        end = now if now is not None else time.time()
    end = _floor(end, step)
    start = _floor(end - parse_duration(config.lookback), step)
    source = f"prometheus {config.url}"
    own_client = client is None
    client = client or httpx.Client(base_url=config.url, timeout=config.timeout_s, headers=_auth_headers(config))
    try:
        demand = _frame(_query_range(client, config, "demand", config.demand_query, start, end, step),
                        config, DEMAND, "demand", clusters=None)
        clusters = sorted(demand[ID].unique())
        frame = demand
        for covariate in config.covariates:
            until = end + covariate.known_future * config.future_steps * step
            series = _query_range(client, config, f"covariate {covariate.name!r}", covariate.query, start, until, step)
            frame = frame.merge(_frame(series, config, covariate.name, f"covariate {covariate.name!r}", clusters),
                                on=[ID, TIME], how="outer")
    finally:
        if own_client:
            client.close()
    frame = frame[frame[ID].isin(clusters)].sort_values([ID, TIME], kind="stable").reset_index(drop=True)
    known = [c.name for c in config.covariates if c.known_future]
    past = [c.name for c in config.covariates if not c.known_future]
    return validate_panel(frame, source=source, known_covariates=known, past_covariates=past,
                          freq=pd.tseries.frequencies.to_offset(pd.Timedelta(seconds=step)).freqstr, max_gap=max_gap)


def _query_range(client: httpx.Client, config: PrometheusSource, what: str, query: str,
                 start: float, end: float, step: float) -> list[dict[str, Any]]:
    """Every series of `query` over [start, end], fetched in chunks Prometheus accepts."""
    merged: dict[tuple, dict[str, Any]] = {}
    chunk_start = start
    while chunk_start <= end:
        chunk_end = min(end, chunk_start + (MAX_POINTS - 1) * step)
        for series in _request(client, config, what, query, chunk_start, chunk_end, step):
            key = tuple(sorted(series["metric"].items()))
            merged.setdefault(key, {"metric": series["metric"], "values": []})["values"] += series["values"]
        chunk_start = chunk_end + step
    if not merged:
        raise PrometheusError(
            f"{config.url}: the {what} query {query!r} returned no series between {_iso(start)} and {_iso(end)} "
            "(is the metric scraped, and are its labels spelled as in the query?)")
    return list(merged.values())


def _request(client: httpx.Client, config: PrometheusSource, what: str, query: str,
             start: float, end: float, step: float) -> list[dict[str, Any]]:
    import httpx

    params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    try:
        response = client.post("/api/v1/query_range", data=params)  # POST: long queries do not fit in a URL
    except httpx.TransportError as exc:
        raise PrometheusError(f"cannot reach Prometheus at {config.url}: {type(exc).__name__}: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        raise PrometheusError(f"{config.url}: HTTP {response.status_code} with a non-JSON body for the {what} "
                              f"query (is this a Prometheus server?): {response.text[:200]!r}") from None
    if response.status_code != 200 or body.get("status") != "success":
        raise PrometheusError(f"{config.url}: Prometheus rejected the {what} query {query!r}: "
                              f"{body.get('errorType', f'HTTP {response.status_code}')}: {body.get('error', '')}")
    data = body.get("data", {})
    if data.get("resultType") != "matrix":
        raise PrometheusError(f"{config.url}: the {what} query {query!r} gave a {data.get('resultType')!r} "
                              "result; a range query needs an instant vector expression")
    return data["result"]


def _frame(series: list[dict[str, Any]], config: PrometheusSource, column: str, what: str,
           clusters: Sequence[str] | None) -> pd.DataFrame:
    """Long table (cluster_id, timestamp, column). Series without the cluster label are broadcast
    to every cluster when they are the query's only series (a covariate shared by all)."""
    import numpy as np
    import pandas as pd

    label = config.cluster_label
    unlabelled = [s for s in series if label not in s["metric"]]
    if unlabelled and (clusters is None or len(series) > 1):
        raise PrometheusError(
            f"{config.url}: a series of the {what} query has no {label!r} label (labels: {unlabelled[0]['metric']}); "
            f"aggregate by it, e.g. sum by ({label}) (...), or set cluster_label")
    seen: dict[str, dict[str, str]] = {}
    parts = []
    for s in series:
        name = s["metric"].get(label)
        if name in seen:
            raise PrometheusError(
                f"{config.url}: the {what} query returned several series for {label}={name!r} "
                f"({seen[name]} and {s['metric']}); aggregate them, e.g. sum by ({label}) (...)")
        seen[name] = s["metric"]
        stamps, values = zip(*s["values"]) if s["values"] else ((), ())
        times = pd.to_datetime(np.asarray(stamps, dtype=float), unit="s")
        numbers = np.asarray([float(v) for v in values], dtype=float)  # "NaN", "+Inf" parse; the contract judges them
        for cluster in ([name] if name is not None else clusters):
            parts.append(pd.DataFrame({ID: cluster, TIME: times, column: numbers}))
    return pd.concat(parts, ignore_index=True)


def _auth_headers(config: PrometheusSource) -> dict[str, str]:
    if not config.bearer_token_env:
        return {}
    token = os.environ.get(config.bearer_token_env)
    if not token:
        raise PrometheusError(f"bearer_token_env: environment variable {config.bearer_token_env!r} is not set")
    return {"Authorization": f"Bearer {token}"}


def _floor(seconds: float, step: float) -> float:
    return math.floor(seconds / step) * step


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")

"""POST /v1/forecast, /healthz, /readyz, /metrics over a real uvicorn server and real HTTP."""

from __future__ import annotations

import copy

import httpx
import numpy as np
import pytest

from forecasting.predictor import DeepARPredictor
from pipelines.api.settings import ServeSettings
from pipelines.serve import create_app

from .conftest import HORIZON, request_body, rows_of, running, wait_ready


@pytest.fixture(scope="module")
def server(model_dir):
    app = create_app(ServeSettings(model=str(model_dir), reload_interval_s=0,
                                   forecast={"max_horizon": 48, "max_samples": 500, "max_sample_values": 50_000}))
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        yield client


def test_forecast_matches_the_predictor_called_directly(server, panel, model_dir):
    body = request_body(panel, quantiles=[0.1, 0.5, 0.9], seed=7, num_samples=50)
    response = server.post("/v1/forecast", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["horizon"] == HORIZON and result["num_samples"] == 50 and result["freq"] == "h"
    assert result["quantile_levels"] == [0.1, 0.5, 0.9]
    assert result["model_version"].startswith("sha256:")

    # The same request, run by hand through the contract and the predictor, gives the same numbers.
    from forecasting.data import validate_panel
    import pandas as pd

    predictor = DeepARPredictor.load(model_dir)
    frame = pd.DataFrame(body["columns"])
    expected = predictor.predict(
        validate_panel(frame, known_covariates=panel.known_covariates, past_covariates=panel.past_covariates,
                       freq="h"), HORIZON, 50, seed=7)
    assert [f["cluster_id"] for f in result["forecasts"]] == expected.cluster_ids
    for c, cluster in enumerate(result["forecasts"]):
        np.testing.assert_allclose(cluster["mean"], expected.mean()[c], rtol=1e-9)
        np.testing.assert_allclose(cluster["quantiles"]["q0.9"], expected.quantile(0.9)[c], rtol=1e-9)
        assert cluster["start"] == expected.starts[c].isoformat()
        assert "samples" not in cluster


def test_rows_and_columns_are_the_same_table(server, panel):
    body = request_body(panel)
    as_rows = {**{k: v for k, v in body.items() if k != "columns"}, "rows": rows_of(body["columns"])}
    by_columns, by_rows = server.post("/v1/forecast", json=body), server.post("/v1/forecast", json=as_rows)
    assert by_columns.status_code == by_rows.status_code == 200
    assert by_columns.json() == by_rows.json()


def test_sample_paths_on_request_and_quantiles_ordered(server, panel):
    result = server.post("/v1/forecast", json=request_body(panel, include_samples=True, num_samples=30)).json()
    for cluster in result["forecasts"]:
        samples = np.array(cluster["samples"])
        assert samples.shape == (30, HORIZON)
        assert (samples >= 0).all()  # demand is never negative
        np.testing.assert_allclose(cluster["mean"], samples.mean(axis=0))
        levels = [cluster["quantiles"][f"q{q:g}"] for q in result["quantile_levels"]]
        assert np.all(np.diff(np.array(levels), axis=0) >= 0)


def test_same_seed_same_forecast_other_seed_differs(server, panel):
    first, again = (server.post("/v1/forecast", json=request_body(panel, seed=3)).json() for _ in range(2))
    other = server.post("/v1/forecast", json=request_body(panel, seed=4)).json()
    assert first == again
    assert first["forecasts"][0]["mean"] != other["forecasts"][0]["mean"]


def _error(response: httpx.Response, status: int = 422) -> dict:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    return response.json()["detail"][0]


def test_contract_violations_name_column_cluster_and_row(server, panel):
    body = request_body(panel)
    columns = copy.deepcopy(body)
    columns["columns"]["demand"][4] = -2.0
    error = _error(server.post("/v1/forecast", json=columns))
    assert error["loc"] == ["body", "columns", "demand", 4]
    assert error["cluster"] == "cluster-000" and "row 5: demand is negative" in error["msg"]

    rows = {"horizon": HORIZON, "rows": rows_of(body["columns"])}
    second_cluster = next(i for i, r in enumerate(rows["rows"]) if r["cluster_id"] == "cluster-001")
    rows["rows"][second_cluster + 2]["timestamp"] = rows["rows"][second_cluster + 1]["timestamp"]
    error = _error(server.post("/v1/forecast", json=rows))
    assert error["loc"] == ["body", "rows", second_cluster + 2, "timestamp"]
    assert error["cluster"] == "cluster-001" and "duplicated timestamp" in error["msg"]


def test_known_future_covariate_missing_over_the_horizon(server, panel):
    body = request_body(panel)
    last = len(body["columns"]["temperature"]) - 1  # the last future row of the last cluster
    body["columns"]["temperature"][last] = None
    error = _error(server.post("/v1/forecast", json=body))
    assert error["loc"] == ["body", "columns", "temperature"]
    assert error["cluster"] == "cluster-002" and "known-future covariate is missing" in error["msg"]


@pytest.mark.parametrize("change, loc, words", [
    (lambda b: b["columns"]["demand"].pop(), ["body", "columns"], "column 'demand' has"),
    (lambda b: b["columns"].__setitem__("humidity", [1.0] * len(b["columns"]["demand"])),
     ["body", "columns", "humidity"], "unknown covariate 'humidity'"),
    (lambda b: b["columns"].pop("event"), ["body", "columns"], "column 'event'"),
    (lambda b: b["columns"]["timestamp"].__setitem__(3, "yesterday"), ["body", "columns", "timestamp", 3], "datetime"),
    (lambda b: b["columns"]["demand"].__setitem__(3, "many"), ["body", "columns", "demand", 3], "number"),
    (lambda b: b.__setitem__("rows", []), ["body"], "exactly one"),
    (lambda b: b.pop("columns"), ["body"], "exactly one"),
    (lambda b: b.__setitem__("horizon", 0), ["body", "horizon"], "greater than or equal to 1"),
    (lambda b: b.__setitem__("horizon", 49), ["body", "horizon"], "limit of 48"),
    (lambda b: b.__setitem__("num_samples", 501), ["body", "num_samples"], "limit of 500"),
    (lambda b: b.update(num_samples=500, horizon=48), ["body", "num_samples"], "clusters × num_samples × horizon"),
    (lambda b: b.__setitem__("quantiles", [0.5, 1.0]), ["body", "quantiles", 1], "less than 1"),
    (lambda b: b.__setitem__("colour", "blue"), ["body", "colour"], "Extra inputs"),
])
def test_bad_requests_are_422_naming_the_field(server, panel, change, loc, words):
    body = request_body(panel)
    change(body)
    error = _error(server.post("/v1/forecast", json=body))
    assert error["loc"][:len(loc)] == loc, error
    assert words in error["msg"], error


def test_non_finite_numbers_and_broken_json_are_422(server, panel):
    import json

    body = request_body(panel)
    text = json.dumps(body)
    for value in (float("inf"), float("nan")):
        broken = copy.deepcopy(body)
        broken["columns"]["demand"][2] = value
        assert "Infinity" in json.dumps(broken) or "NaN" in json.dumps(broken)
        response = server.post("/v1/forecast", content=json.dumps(broken), headers={"content-type": "application/json"})
        assert _error(response)["loc"] == ["body", "columns", "demand", 2]
    response = server.post("/v1/forecast", content=text[:-5], headers={"content-type": "application/json"})
    assert _error(response)["type"] == "json_invalid"


def test_health_readiness_and_model(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz").json()
    assert ready["ready"] and ready["checks"]["model"].startswith("ok: version sha256:")
    assert ready["checks"]["store"] == "not configured"
    model = server.get("/v1/model").json()
    assert model["freq"] == "h" and model["known_covariates"] == ["temperature", "event"]


def test_metrics_expose_latency_per_route_model_and_forecast_age(server, panel):
    server.post("/v1/forecast", json=request_body(panel))
    server.get("/no/such/route")
    text = server.get("/metrics").text
    assert 'shadowcast_http_request_duration_seconds_count{method="POST",route="/v1/forecast",status="200"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "/no/such/route" not in text  # unknown paths never become label values
    assert 'shadowcast_model_info{uri="' in text and 'version="sha256:' in text
    age = float(next(line.split()[-1] for line in text.splitlines() if line.startswith("shadowcast_forecast_age_seconds")))
    assert 0 <= age < 60


class _Store:
    def __init__(self, fail: bool) -> None:
        self.fail, self.pings = fail, 0

    def ping(self) -> None:
        self.pings += 1
        if self.fail:
            raise ConnectionError("database is down")


def test_readiness_needs_the_model_and_a_reachable_store(model_dir, tmp_path):
    broken = create_app(ServeSettings(model=str(tmp_path / "missing"), reload_interval_s=0))
    with running(broken) as url:
        response = httpx.get(f"{url}/readyz")
        assert response.status_code == 503 and not response.json()["ready"]
        forecast = httpx.post(f"{url}/v1/forecast", json={"rows": [{"cluster_id": "a", "timestamp": "2025-01-01"}]})
        assert forecast.status_code == 503 and "no model is being served" in forecast.json()["detail"]
    for fail, status in ((True, 503), (False, 200)):
        store = _Store(fail)
        with running(create_app(ServeSettings(model=str(model_dir), reload_interval_s=0), store=store)) as url:
            response = httpx.get(f"{url}/readyz")
            for _ in range(100):
                if "loading" not in response.text:
                    break
                response = httpx.get(f"{url}/readyz")
            assert response.status_code == status, response.text
            assert store.pings >= 1
            if fail:
                assert response.json()["checks"]["store"] == "error: ConnectionError: database is down"


def test_routers_plug_in_and_add_their_own_metrics(model_dir):
    """The seam the allocator routes use: a module with `router` and `install(app, services)`."""
    import types

    from fastapi import APIRouter, Depends

    from pipelines.api.auth import require_key
    from pipelines.api.deps import Services, get_services

    plugin = types.SimpleNamespace(router=APIRouter())

    def install(app, services: Services) -> None:
        services.extras["things"] = services.metrics.counter("things_total", "Things done.", ["outcome"])
        assert services.metrics.counter("things_total", "Things done.", ["outcome"]) is services.extras["things"]
        with pytest.raises(ValueError, match="already registered as a Counter with labels"):
            services.metrics.counter("switchovers_total", "Clash.", ["outcome"])  # the switchover router's

    @plugin.router.post("/v1/things", dependencies=[Depends(require_key)])
    def things(services: Services = Depends(get_services)) -> dict:
        services.extras["things"].labels("succeeded").inc()
        return {}

    plugin.install = install
    app = create_app(ServeSettings(model=str(model_dir), reload_interval_s=0), routers=[plugin], follow_model=False)
    assert "/v1/things" in app.openapi()["paths"]
    with running(app) as url:
        assert httpx.post(f"{url}/v1/things").status_code == 403  # no keys configured: mutating routes are closed
        app.state.services.extras["things"].labels("succeeded").inc()
        assert 'shadowcast_things_total{outcome="succeeded"} 1.0' in httpx.get(f"{url}/metrics").text

"""Swapping the served model (MLflow registry alias) while requests keep coming: none is dropped,
none sees a half-swapped model, and the alias is followed without an admin call when asked to."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from pipelines.api.settings import ServeSettings
from pipelines.security import hash_key
from pipelines.serve import create_app

from .conftest import API_KEY, register, request_body, running, set_alias, untrained_predictor, wait_ready

NAME = "swap-test-dpe"


@pytest.fixture(scope="module")
def versions(panel, tmp_path_factory):
    folder = tmp_path_factory.mktemp("swap")
    found = [register(untrained_predictor(panel, seed=seed), NAME, folder / f"m{seed}") for seed in (11, 12, 13)]
    set_alias(NAME, "champion", found[0])
    return found


def _hammer(url: str, body: dict, stop: threading.Event, results: list) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = client.post("/v1/forecast", json=body)
                results.append((started, time.monotonic(), response.status_code, response.json().get("model_version"),
                                response.json().get("forecasts", [{}])[0].get("mean")))
            except Exception as exc:  # a dropped connection is exactly what this test must not see
                results.append((started, time.monotonic(), type(exc).__name__, None, None))


def test_reload_under_concurrent_requests_drops_nothing(versions, panel):
    v1, v2, _ = versions
    settings = ServeSettings(model=f"models:/{NAME}@champion", reload_interval_s=0,
                             security={"api_key_hashes": [hash_key(API_KEY)]})
    body = request_body(panel, num_samples=50)
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as admin:
        wait_ready(admin)
        assert admin.get("/v1/model").json()["version"] == v1
        stop, results = threading.Event(), []
        workers = [threading.Thread(target=_hammer, args=(url, body, stop, results)) for _ in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(0.5)
        set_alias(NAME, "champion", v2)
        reload = admin.post("/v1/admin/reload-model", json={}, headers={"X-API-Key": API_KEY})
        swapped_at = time.monotonic()
        time.sleep(0.5)
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        metrics = admin.get("/metrics").text

    assert reload.status_code == 200, reload.text
    assert reload.json() == {"changed": True, "previous_version": v1, "version": v2,
                             "location": f"models:/{NAME}@champion"}
    statuses = {r[2] for r in results}
    assert statuses == {200}, statuses
    before = [r for r in results if r[1] < swapped_at and r[3] == v1]
    after = [r for r in results if r[0] > swapped_at]
    assert before and after, (len(before), len(after))
    assert {r[3] for r in after} == {v2}
    # Each version's answers are its own model's: identical within a version, different across.
    assert len({tuple(r[4]) for r in results if r[3] == v1}) == 1
    assert len({tuple(r[4]) for r in results if r[3] == v2}) == 1
    assert before[0][4] != after[0][4]
    assert f'shadowcast_model_info{{uri="models:/{NAME}/{v2}",version="{v2}"}} 1.0' in metrics
    assert 'shadowcast_model_reloads_total{outcome="changed"}' in metrics


def test_alias_is_followed_without_an_admin_call(versions):
    v1, _, v3 = versions
    set_alias(NAME, "champion", v1)
    settings = ServeSettings(model=f"models:/{NAME}@champion", reload_interval_s=0.2)
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        assert client.get("/v1/model").json()["version"] == v1
        set_alias(NAME, "champion", v3)
        deadline = time.monotonic() + 20
        while client.get("/v1/model").json()["version"] != v3:
            assert time.monotonic() < deadline, "the moved alias was not followed"
            time.sleep(0.1)


def test_a_failed_reload_keeps_serving_the_old_model(versions, model_dir):
    settings = ServeSettings(model=str(model_dir), reload_interval_s=0, security={"api_key_hashes": [hash_key(API_KEY)]})
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        served = client.get("/v1/model").json()["version"]
        response = client.post("/v1/admin/reload-model", json={"location": f"models:/{NAME}@no-such-alias"},
                               headers={"X-API-Key": API_KEY})
        assert response.status_code == 422
        error = response.json()["detail"][0]
        assert error["loc"] == ["body", "location"] and f"still serving version {served}" in error["msg"]
        assert client.get("/v1/model").json()["version"] == served
        assert client.get("/readyz").status_code == 200
        pinned = client.post("/v1/admin/reload-model", json={"location": f"models:/{NAME}/{versions[1]}"},
                             headers={"X-API-Key": API_KEY})
        assert pinned.status_code == 200 and pinned.json()["version"] == versions[1]

"""Plans, switchovers, resources and notifications over real HTTP, on the allocator's runtime
(simulated driver, a real SQLite state store, the real notifier)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pytest

from allocator.controller import Controller
from allocator.drivers.simulated import SimulatedDriver
from allocator.notify import Notifier
from allocator.policy import plan as policy_plan
from allocator.store import open_store
from allocator.types import ClusterFleet, CostModel, FleetState, PolicyConfig, PoolSpec, ResourceState
from pipelines.api.runtime import Runtime
from pipelines.api.settings import ServeSettings
from pipelines.security import hash_key
from pipelines.serve import create_app

from .conftest import API_KEY, request_body, running, wait_ready

KEY = {"X-API-Key": API_KEY}
SPEC = PoolSpec(name="web-pool", cold_provision_s=60, warm_activation_s=1)


@pytest.fixture
def runtime(tmp_path):
    driver = SimulatedDriver(routes=("web",))
    store = open_store(f"sqlite:///{tmp_path / 'runtime.db'}")
    notifier = Notifier(timeout_s=2.0)
    runtime = Runtime(Controller(driver, store, notifier), store, notifier, driver)
    yield runtime
    runtime.close()


@pytest.fixture
def client(model_dir, runtime):
    settings = ServeSettings(model=str(model_dir), reload_interval_s=0, security={"api_key_hashes": [hash_key(API_KEY)]},
                             plan={"pool": {"capacity_per_unit": 40, "cold_provision_s": 7200, "warm_activation_s": 5}})
    app = create_app(settings, runtime=runtime)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        client.app = app  # tests look at the server's own cache through it
        yield client


def test_plan_from_cached_forecasts_matches_the_policy(client, panel):
    assert client.post("/v1/plan", json={}, headers=KEY).status_code == 409  # nothing cached yet
    forecast = client.post("/v1/forecast", json=request_body(panel, num_samples=40)).json()
    response = client.post("/v1/plan", json={"fleet": {"cluster-000": {"active": 2}}}, headers=KEY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["cluster_id"] for c in body["clusters"]] == [f["cluster_id"] for f in forecast["forecasts"]]
    assert client.get("/v1/plan/current").json() == body

    # The same plan, computed by the policy directly from the forecast the server cached.
    cached = client.app.state.services.forecasts.get()
    expected = policy_plan(cached, FleetState({"cluster-000": ClusterFleet(active=2)}), CostModel(),
                           PoolSpec(capacity_per_unit=40, cold_provision_s=7200, warm_activation_s=5), PolicyConfig())
    for cluster in body["clusters"]:
        wanted = expected.clusters[cluster["cluster_id"]]
        assert tuple(cluster["active_units"]) == wanted.active_units
        assert tuple(cluster["shadow_units"]) == wanted.shadow_units
        np.testing.assert_allclose(cluster["exceed_probability"], wanted.exceed_probability)
    assert 'shadowcast_plan_units{kind="active"}' in client.get("/metrics").text


def test_replanning_follows_new_forecasts_and_other_pools(client, panel):
    """The server keeps the last forecast's sorted paths between plans: a new forecast, or a pool
    with other timing, must be planned from scratch, never from the stale sort."""
    spec = PoolSpec(capacity_per_unit=40, cold_provision_s=7200, warm_activation_s=5)
    fleet = {"cluster-000": {"active": 2}}

    def check(request: dict, spec: PoolSpec) -> dict:
        body = client.post("/v1/plan", json={"fleet": fleet, **request}, headers=KEY).json()
        expected = policy_plan(client.app.state.services.forecasts.get(), FleetState({"cluster-000": ClusterFleet(active=2)}),
                               CostModel(), spec, PolicyConfig())
        assert {c["cluster_id"]: tuple(c["active_units"]) for c in body["clusters"]} == \
            {c: p.active_units for c, p in expected.clusters.items()}
        assert {c["cluster_id"]: tuple(c["shadow_units"]) for c in body["clusters"]} == \
            {c: p.shadow_units for c, p in expected.clusters.items()}
        return body

    client.post("/v1/forecast", json=request_body(panel, num_samples=40))
    first = check({}, spec)
    again = check({}, spec)  # the same forecast: the same plan under a new id
    assert again["plan_id"] != first["plan_id"] and again["clusters"] == first["clusters"]
    quick = {"capacity_per_unit": 40, "cold_provision_s": 60, "warm_activation_s": 5}  # a lead of 0 steps, not 2
    check({"pool": quick}, PoolSpec(**quick))

    body = request_body(panel, num_samples=40)
    body["columns"]["demand"] = [None if v is None else 4 * v for v in body["columns"]["demand"]]
    client.post("/v1/forecast", json=body)  # four times the demand: a new cached forecast
    bigger = check({}, spec)
    assert sum(sum(c["active_units"]) for c in bigger["clusters"]) > sum(sum(c["active_units"]) for c in first["clusters"])


def test_plan_inputs_are_validated(client, panel):
    client.post("/v1/forecast", json=request_body(panel))
    bad = client.post("/v1/plan", json={"pool": {"cold_provision_s": 1, "warm_activation_s": 5}}, headers=KEY)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "pool"]
    assert "warm activation cannot be slower" in bad.json()["detail"][0]["msg"]
    assert client.post("/v1/plan", json={"cluster_ids": ["nope"]}, headers=KEY).status_code == 409
    assert client.post("/v1/plan", json={}).status_code == 401
    assert client.post("/v1/plan", json={"policy": {"active_level": 1.5}}, headers=KEY).status_code == 422


def _two_units(runtime: Runtime) -> tuple[str, str]:
    controller = runtime.controller
    active = controller.provision(SPEC, cluster_id="web")
    controller.open_route("web", active.id)
    shadow = controller.provision(SPEC, cluster_id="web", warm=True)
    return active.id, shadow.id


def test_switchover_then_revert_over_http_with_an_sse_client_told_first(client, runtime):
    active, shadow = _two_units(runtime)
    events: list[dict] = []
    listening = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{client.base_url}/v1/notifications", params={"cluster_id": "web"},
                          timeout=30) as stream:
            for line in stream.iter_lines():
                if line.startswith(": connected"):
                    listening.set()
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
                    if len(events) >= 1:
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert listening.wait(10)
    response = client.post("/v1/switchovers", json={"id": "sw-1", "route": "web", "source_id": active,
                                                     "target_id": shadow}, headers=KEY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["phase"] == "committed" and body["cluster_id"] == "web"
    assert [e["phase"] for e in body["journal"]][:1] == ["planned"] and body["journal"][-1]["phase"] == "committed"
    listener.join(10)
    assert events and events[0]["switchover_id"] == "sw-1" and events[0]["event"] == "upcoming"

    states = {r["id"]: r["state"] for r in client.get("/v1/resources", params={"cluster_id": "web"}).json()["resources"]}
    assert states == {active: "standby", shadow: "active"}
    again = client.post("/v1/switchovers", json={"id": "sw-1", "route": "web", "source_id": active,
                                                  "target_id": shadow}, headers=KEY)
    assert again.json()["phase"] == "committed" and len(again.json()["journal"]) == len(body["journal"])  # idempotent
    assert client.get("/v1/switchovers/sw-1").json()["phase"] == "committed"

    reverted = client.post("/v1/switchovers/sw-1/revert", headers=KEY)
    assert reverted.status_code == 200 and reverted.json()["kind"] == "revert", reverted.text
    states = {r.id: r.state for r in runtime.store.resources("web")}
    assert states == {active: ResourceState.ACTIVE, shadow: ResourceState.WARM}
    assert client.post("/v1/switchovers/sw-1.revert/revert", headers=KEY).status_code == 409
    assert 'shadowcast_switchovers_total{kind="switchover",outcome="committed"} 2.0' in client.get("/metrics").text  # two requests, one switchover


def test_switchover_errors(client, runtime):
    active, shadow = _two_units(runtime)
    assert client.get("/v1/switchovers/nope").status_code == 404
    assert client.post("/v1/switchovers/nope/revert", headers=KEY).status_code == 404
    wrong = client.post("/v1/switchovers", json={"route": "web", "source_id": shadow, "target_id": active}, headers=KEY)
    assert wrong.status_code == 409 and "Traceback" not in wrong.text
    assert client.post("/v1/switchovers", json={"route": "web", "source_id": active, "target_id": shadow}).status_code == 401
    runtime.driver.fail_next("redirect")
    failed = client.post("/v1/switchovers", json={"id": "sw-f", "route": "web", "source_id": active,
                                                   "target_id": shadow}, headers=KEY)
    assert failed.status_code == 200 and failed.json()["phase"] == "rolled-back" and failed.json()["error"]


def test_webhooks_register_list_and_remove(client):
    created = client.post("/v1/notifications/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=KEY)
    assert created.status_code == 201
    hook = created.json()
    assert client.get("/v1/notifications/webhooks").json() == [hook]
    assert client.post("/v1/notifications/webhooks", json={"url": "ftp://x/y"}, headers=KEY).status_code == 422
    assert client.delete(f"/v1/notifications/webhooks/{hook['id']}", headers=KEY).status_code == 204
    assert client.delete(f"/v1/notifications/webhooks/{hook['id']}", headers=KEY).status_code == 404


def test_runtime_routes_without_a_runtime_are_404(model_dir):
    with running(create_app(ServeSettings(model=str(model_dir), reload_interval_s=0))) as url:
        for path in ("/v1/resources", "/v1/switchovers/x", "/v1/notifications/webhooks"):
            response = httpx.get(f"{url}{path}")
            assert response.status_code == 404 and "no runtime is configured" in response.text

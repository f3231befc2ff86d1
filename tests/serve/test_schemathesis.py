"""Property-based run of the API against its own OpenAPI schema (Schemathesis), over real HTTP:
whatever the generated request, the server answers without a 5xx and as its schema says.

Driven through Hypothesis directly (one test per operation) rather than Schemathesis' pytest
plugin, whose lazy-fixture loader does not run under this pytest version."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from pipelines.api.settings import ServeSettings
from pipelines.security import hash_key
from pipelines.serve import create_app

from .conftest import API_KEY, running, wait_ready

EXAMPLES = 25  # per operation: bounded so the whole file stays in seconds


def _settings(model: str, runtime_dir=None) -> ServeSettings:
    # Small limits keep generated forecasts cheap; the key lets generated requests past auth; the
    # simulated runtime (with a real SQLite store) puts the switchover routes under test too.
    return ServeSettings(model=model, reload_interval_s=0, security={"api_key_hashes": [hash_key(API_KEY)]},
                         forecast={"max_horizon": 24, "max_samples": 50, "max_rows": 2000},
                         runtime={"driver": "simulated", "runtime_dir": runtime_dir, "routes": ["web"]})


# The event stream never ends by design, so a generated call to it would never return.
ENDLESS = {("GET", "/v1/notifications")}
OPERATIONS = [(method.upper(), path)
              for path, methods in create_app(ServeSettings(model="unused"), follow_model=False).openapi()["paths"].items()
              for method in methods if (method.upper(), path) not in ENDLESS]


@pytest.fixture(scope="module")
def api_schema(model_dir, tmp_path_factory):
    with running(create_app(_settings(str(model_dir), tmp_path_factory.mktemp("runtime")))) as url:
        with httpx.Client(base_url=url) as client:
            wait_ready(client)
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


@pytest.mark.parametrize("method, path", OPERATIONS)
def test_operation_conforms_to_the_schema(api_schema, method, path):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        # Every check but "schema-valid data is accepted": the data contract has rules JSON Schema
        # cannot state (timestamps increasing per cluster, one frequency, covariates over the
        # horizon), so a schema-valid body may rightly get a 422.
        case.call_and_validate(headers={"X-API-Key": API_KEY}, excluded_checks=[positive_data_acceptance])

    check()

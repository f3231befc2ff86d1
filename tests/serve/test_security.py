"""Keys stored as hashes, 401/403 on protected routes, 413 on big bodies, 422 never 500, CORS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pipelines.api.model_holder import Resolved
from pipelines.api.settings import ServeSettings
from pipelines.security import KeyHash, KeyHashError, KeyVerifier, hash_key, presented_key
from pipelines.serve import create_app
from pipelines.settings import ConfigError, parse_config

from .conftest import API_KEY, request_body, running, wait_ready

BIN = Path(sys.executable).parent / "shadowcast"


@pytest.mark.parametrize("scheme", ["sha256", "scrypt"])
def test_hashes_verify_only_their_key(scheme):
    stored = hash_key("s3cret-key", scheme)
    assert stored.startswith(f"{scheme}$") and "s3cret-key" not in stored
    verifier = KeyVerifier([hash_key("other-key"), stored])
    assert verifier.verify("s3cret-key")
    assert verifier.verify("s3cret-key")  # the second time from the cache of accepted keys
    for wrong in ("s3cret-kez", "", None, "s3cret-key "):
        assert not verifier.verify(wrong)
    if scheme == "scrypt":  # salted: the same key never hashes to the same text twice
        assert hash_key("s3cret-key", scheme) != stored
        assert KeyHash.parse(stored).log2_n == 14


def test_malformed_hashes_are_rejected_in_the_settings_by_key_path():
    with pytest.raises(KeyHashError, match="expected 'sha256"):
        KeyHash.parse("md5$abcd")
    with pytest.raises(ConfigError, match=r"serve\.yaml: security\.api_key_hashes: .*64 hex digits"):
        parse_config({"security": {"api_key_hashes": ["sha256$abcd"]}}, ServeSettings, source="serve.yaml")
    assert not KeyVerifier([]).verify("anything")


def test_presented_key_comes_from_the_header_or_a_bearer_token():
    assert presented_key("k1", "Bearer k2") == "k1"
    assert presented_key(None, "Bearer k2") == "k2"
    assert presented_key(None, "bearer  k2 ") == "k2"
    assert presented_key(None, "Basic azI=") is None
    assert presented_key(None, None) is None


@pytest.fixture(scope="module")
def protected(model_dir):
    settings = ServeSettings(model=str(model_dir), reload_interval_s=0,
                             security={"api_key_hashes": [hash_key(API_KEY, "scrypt")], "protect_reads": True,
                                       "max_body_bytes": 4096})
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        yield client


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"Authorization": f"Basic {API_KEY}"}, 401),
    ({"X-API-Key": "wrong"}, 403),
    ({"Authorization": "Bearer wrong"}, 403),
    ({"X-API-Key": API_KEY}, 200),
    ({"Authorization": f"Bearer {API_KEY}"}, 200),
])
def test_mutating_route_needs_a_valid_key(protected, headers, status):
    response = protected.post("/v1/admin/reload-model", json={}, headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if status == 200:
        assert response.json()["changed"] is False


def test_protected_reads_need_a_key_but_probes_stay_open(protected):
    for path in ("/v1/model", "/metrics"):
        assert protected.get(path).status_code == 401
        assert protected.get(path, headers={"X-API-Key": API_KEY}).status_code == 200
    assert protected.post("/v1/forecast", json={}).status_code == 401
    assert protected.get("/healthz").status_code == 200 and protected.get("/readyz").status_code == 200


def test_bodies_over_the_limit_are_413_declared_or_streamed(protected):
    big = b'{"rows": [' + b" " * 5000 + b"]}"
    headers = {"X-API-Key": API_KEY, "content-type": "application/json"}
    assert protected.post("/v1/forecast", content=big, headers=headers).status_code == 413

    def chunks():  # no Content-Length: the server has to count while reading
        for _ in range(10):
            yield b" " * 1000

    response = protected.post("/v1/forecast", content=chunks(), headers=headers)
    assert response.status_code == 413
    small = protected.post("/v1/forecast", content=b'{"rows": []}', headers=headers)
    assert small.status_code == 422


def test_open_server_without_keys_refuses_mutations(model_dir):
    with running(create_app(ServeSettings(model=str(model_dir), reload_interval_s=0))) as url:
        response = httpx.post(f"{url}/v1/admin/reload-model", json={}, headers={"X-API-Key": "anything"})
        assert response.status_code == 403 and "no API keys configured" in response.json()["detail"]
        assert httpx.get(f"{url}/v1/model").status_code in (200, 503)  # reads are open by default


class _ExplodingLoader:
    """Loads a 'model' whose prediction fails inside: the client must get a bare 500."""

    def __init__(self, real_dir: Path) -> None:
        from forecasting.predictor import DeepARPredictor

        self.real = DeepARPredictor.load(real_dir)

    def resolve(self, location: str) -> Resolved:
        return Resolved(location, "exploding")

    def load(self, resolved: Resolved):
        real = self.real

        class Exploding:
            metadata = real.metadata
            check_panel = real.check_panel

            def predict(self, *args, **kwargs):
                raise RuntimeError("secret internal detail /etc/shadowcast")

        return Exploding()


def test_unexpected_failures_are_500_without_details(model_dir, panel):
    app = create_app(ServeSettings(model="x", reload_interval_s=0), predictor_loader=_ExplodingLoader(model_dir))
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        response = client.post("/v1/forecast", json=request_body(panel))
        assert response.status_code == 500
        assert response.json()["detail"].startswith("internal error (incident ")
        assert "secret" not in response.text and "Traceback" not in response.text


def test_cors_is_off_by_default_and_limited_to_configured_origins(model_dir):
    preflight = {"Origin": "https://dash.example", "Access-Control-Request-Method": "POST"}
    with running(create_app(ServeSettings(model=str(model_dir), reload_interval_s=0))) as url:
        response = httpx.options(f"{url}/v1/forecast", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    settings = ServeSettings(model=str(model_dir), reload_interval_s=0,
                             security={"cors_origins": ["https://dash.example"]})
    with running(create_app(settings)) as url:
        allowed = httpx.options(f"{url}/v1/forecast", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
        other = httpx.options(f"{url}/v1/forecast", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def _hash_key(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "hash-key", *args], input=stdin, capture_output=True, text=True, timeout=60,
                          env={**os.environ})


def test_hash_key_command():
    result = _hash_key(stdin="my-new-key\n")
    assert result.returncode == 0, result.stderr
    assert KeyVerifier([result.stdout.strip()]).verify("my-new-key")
    generated = _hash_key("--generate", "--scheme", "scrypt")
    key = generated.stderr.split("key:", 1)[1].strip()
    assert len(key) >= 40 and key not in generated.stdout
    assert KeyVerifier([generated.stdout.strip()]).verify(key)
    empty = _hash_key()
    assert empty.returncode == 2 and "error: no key on standard input" in empty.stderr
    assert _hash_key("--scheme", "md5", stdin="k\n").returncode == 2

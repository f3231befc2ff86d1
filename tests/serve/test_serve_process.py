"""`shadowcast serve` as a real process: it starts, loads the champion from the registry, answers,
stops on SIGTERM, and never imports the training stack (Lightning, GluonTS, Optuna)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from pipelines.security import hash_key

from .conftest import API_KEY, free_port, register, request_body, set_alias, untrained_predictor

FORBIDDEN = ("lightning", "pytorch_lightning", "gluonts", "optuna", "matplotlib")

# The real command line, plus an exit hook that reports which forbidden packages got imported.
# uvicorn shuts down gently on SIGTERM, then raises the signal again for the previous handler:
# ours exits normally, so the exit hook runs and a clean shutdown reads as status 0.
LAUNCHER = """
import atexit, json, signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
forbidden = {forbidden!r}
atexit.register(lambda: print("MODULES " + json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set(forbidden))),
                              file=sys.stderr, flush=True))
from pipelines.cli import main
sys.argv = ["shadowcast", "serve", "--config", {config!r}]
main()
"""


@pytest.fixture(scope="module")
def champion(panel, tmp_path_factory):
    version = register(untrained_predictor(panel, seed=21), "process-test-dpe", tmp_path_factory.mktemp("p") / "m")
    set_alias("process-test-dpe", "champion", version)
    return version


def test_serve_command_serves_and_imports_no_training_stack(champion, panel, tmp_path):
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "model": "models:/process-test-dpe@champion", "port": port, "reload_interval_s": 0, "log_level": "warning",
        "security": {"api_key_hashes": [hash_key(API_KEY)]}}))
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER.format(forbidden=FORBIDDEN, config=str(config))],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        ready_after = None
        while time.monotonic() - started < 60 and process.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    ready_after = time.monotonic() - started
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        assert ready_after is not None, process.stderr.read() if process.poll() is not None else "not ready in 60 s"
        forecast = httpx.post(f"{url}/v1/forecast", json=request_body(panel), timeout=30)
        assert forecast.status_code == 200 and forecast.json()["model_version"] == champion
        reload = httpx.post(f"{url}/v1/admin/reload-model", json={"force": True}, headers={"X-API-Key": API_KEY},
                            timeout=30)
        assert reload.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    line = next(line for line in stderr.splitlines() if line.startswith("MODULES "))
    assert json.loads(line.removeprefix("MODULES ")) == []
    # No time bound here (a shared 2-core machine makes any bound flaky): benchmarks/serve_latency.py
    # measures cold start against its 5 s floor.

"""The Prometheus source against a real `prometheus` process on loopback, scraping a small
exporter of ours every second: range queries in, a validated panel out, clear errors otherwise."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest

from pipelines.prometheus_source import PrometheusError, PrometheusSource, load_prometheus_panel, parse_duration
from pipelines.settings import ConfigError, parse_config

PROMETHEUS = shutil.which("prometheus")
SECONDS_OF_DATA = 8


class Exporter(BaseHTTPRequestHandler):
    """Text-format metrics: demand per cluster (web-2 always twice web-1) and a CPU gauge."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        base = float(int(time.time()) % 1000 + 10)
        body = ("# TYPE shadowcast_test_demand gauge\n"
                f'shadowcast_test_demand{{cluster="web-1"}} {base}\n'
                f'shadowcast_test_demand{{cluster="web-2"}} {2 * base}\n'
                "# TYPE shadowcast_test_cpu gauge\n"
                f'shadowcast_test_cpu{{cluster="web-1"}} {base / 1000}\n'
                f'shadowcast_test_cpu{{cluster="web-2"}} {2 * base / 1000}\n').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    if PROMETHEUS is None:
        pytest.skip("the prometheus binary is not installed (apt-get install prometheus; .ci/run does)")
    folder = tmp_path_factory.mktemp("prometheus")
    exporter = ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    (folder / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: exporter\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter.server_address[1]}']\n")
    port = _free_port()
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=open(folder / "prometheus.log", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_data(url, process, folder)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        exporter.shutdown()


def _wait_for_data(url: str, process: subprocess.Popen, folder) -> None:
    """Until Prometheus holds SECONDS_OF_DATA seconds of samples of both clusters."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        assert process.poll() is None, (folder / "prometheus.log").read_text()
        try:
            body = httpx.get(f"{url}/api/v1/query", params={"query": f"count_over_time(shadowcast_test_demand[1m])"},
                             timeout=2).json()
            counts = [float(s["value"][1]) for s in body["data"]["result"]]
            if len(counts) == 2 and min(counts) > SECONDS_OF_DATA + 1:
                return
        except (httpx.TransportError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError("prometheus did not collect enough samples in 40 s")


def _source(url: str, **overrides) -> PrometheusSource:
    values = {"url": url, "demand_query": "shadowcast_test_demand", "step": "1s", "lookback": f"{SECONDS_OF_DATA}s"}
    return PrometheusSource(**{**values, **overrides})


def test_panel_from_range_queries(prometheus):
    config = _source(prometheus, future_steps=4, covariates=[
        {"name": "cpu", "query": "shadowcast_test_cpu"},
        {"name": "second", "query": "vector(time() % 60)", "known_future": True},
    ])
    now = time.time()
    panel = load_prometheus_panel(config, now=now)
    assert panel.cluster_ids == ["web-1", "web-2"]
    assert panel.freq == "s"
    assert panel.past_covariates == ("cpu",) and panel.known_covariates == ("second",)
    history = panel.history()
    assert history.groupby("cluster_id").size().to_dict() == {"web-1": SECONDS_OF_DATA + 1, "web-2": SECONDS_OF_DATA + 1}
    assert history["timestamp"].max() == np.datetime64(int(now), "s")  # the range ends at `now`, on the step grid
    one, two = (history[history.cluster_id == c].set_index("timestamp") for c in ("web-1", "web-2"))
    np.testing.assert_allclose(two["demand"], 2 * one["demand"])  # same scrape, known relation
    np.testing.assert_allclose(one["cpu"], one["demand"] / 1000)
    # The known-future covariate runs `future_steps` past the last demand, with its known values.
    future = panel.frame[panel.frame["demand"].isna()]
    assert len(future) == 2 * 4 and future["cpu"].isna().all()
    np.testing.assert_allclose(future["second"], future["timestamp"].dt.second)
    panel.require_future(4)


def test_config_is_validated_with_the_key_named(prometheus):
    with pytest.raises(ConfigError, match="data.yaml: step: Value error, '5 minutes' is not a Prometheus duration"):
        parse_config({"demand_query": "x", "step": "5 minutes"}, PrometheusSource, source="data.yaml")
    with pytest.raises(ConfigError, match="covariates: Value error, covariate names must be distinct"):
        parse_config({"demand_query": "x", "covariates": [{"name": "a", "query": "q"}, {"name": "a", "query": "r"}]},
                     PrometheusSource, source="data.yaml")
    assert parse_duration("1h30m") == 5400 and parse_duration("250ms") == 0.25


@pytest.mark.parametrize("overrides, message", [
    ({"demand_query": "sum(shadowcast_test_demand"}, "Prometheus rejected the demand query 'sum(shadowcast_test_demand': bad_data"),
    ({"demand_query": "shadowcast_no_such_metric"}, "the demand query 'shadowcast_no_such_metric' returned no series between"),
    ({"demand_query": "sum(shadowcast_test_demand)"}, "a series of the demand query has no 'cluster' label"),
    ({"demand_query": 'label_replace(label_replace(shadowcast_test_demand, "was", "$1", "cluster", "(.*)"), '
                      '"cluster", "same", "", "")'}, "several series for cluster='same'"),
    ({"covariates": [{"name": "cpu", "query": "shadowcast_test_cpu{cluster='nowhere'}"}]},
     "the covariate 'cpu' query"),
    ({"demand_query": "scalar(sum(shadowcast_test_demand))"}, "no 'cluster' label"),
])
def test_bad_queries_fail_clearly(prometheus, overrides, message):
    with pytest.raises(PrometheusError) as error:
        load_prometheus_panel(_source(prometheus, **overrides))
    assert message in str(error.value)
    assert prometheus in str(error.value)


def test_unreachable_server_fails_clearly():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(PrometheusError, match=f"cannot reach Prometheus at {url}: ConnectError"):
        load_prometheus_panel(_source(url))


def test_long_ranges_are_fetched_in_chunks(prometheus, monkeypatch):
    import pipelines.prometheus_source as module

    monkeypatch.setattr(module, "MAX_POINTS", 3)  # 9 steps → 3 requests, one series per cluster
    panel = load_prometheus_panel(_source(prometheus), now=time.time())
    assert panel.history().groupby("cluster_id").size().tolist() == [SECONDS_OF_DATA + 1] * 2

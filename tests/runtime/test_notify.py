"""Client notification over real HTTP: webhooks and server-sent events, before traffic moves."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from allocator.controller import Controller
from allocator.drivers.haproxy import free_port
from allocator.drivers.local import LocalDriver, http_json
from allocator.notify import Notifier, SSEServer, SwitchoverNotice
from allocator.store import Store
from allocator.types import PoolSpec, SwitchoverPhase
from tests.runtime.conftest import ROUTE

SPEC = PoolSpec(name="web-pool", cold_provision_s=5, warm_activation_s=0.1)


class WebhookClient:
    """A client's webhook endpoint. On each notice it asks the route who serves it right now."""

    def __init__(self, route_url: str | None = None, status: int = 204) -> None:
        self.notices: list[tuple[dict, str | None]] = []
        client = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                notice = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                served_by = None
                if route_url and notice["event"] == "upcoming":
                    served_by = http_json("POST", route_url, "/s/probe/incr")[1]["served_by"]
                client.notices.append((notice, served_by))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/notices"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def notifier() -> Iterator[Notifier]:
    made = Notifier(timeout_s=1.0)
    yield made
    made.close()


def test_webhook_clients_hear_before_traffic_moves(local_driver: LocalDriver, sqlite_store: Store,
                                                   notifier: Notifier) -> None:
    controller = Controller(local_driver, sqlite_store, notifier)
    a = controller.provision(SPEC, cluster_id=ROUTE)
    controller.open_route(ROUTE, a.id)
    b = controller.provision(SPEC, cluster_id=ROUTE)
    client = WebhookClient(local_driver.route_url(ROUTE))
    other_cluster = WebhookClient()
    try:
        notifier.register_webhook(client.url, cluster_id=ROUTE)
        notifier.register_webhook(client.url, cluster_id=ROUTE)  # twice: still one delivery
        notifier.register_webhook(other_cluster.url, cluster_id="elsewhere")
        sw = controller.switch("sw-1", ROUTE, a.id, b.id)
    finally:
        client.close()
        other_cluster.close()
    assert sw.phase is SwitchoverPhase.COMMITTED
    events = [(n["event"], n["switchover_id"], served_by) for n, served_by in client.notices]
    assert events == [("upcoming", "sw-1", a.id), ("committed", "sw-1", None)]
    assert other_cluster.notices == []
    notifying = [e for e in sqlite_store.journal("sw-1") if e.phase is SwitchoverPhase.REDIRECTING]
    assert notifying[0].detail == "notified 1"


def test_an_unreachable_webhook_is_recorded_and_does_not_block(local_driver: LocalDriver, sqlite_store: Store,
                                                               notifier: Notifier) -> None:
    controller = Controller(local_driver, sqlite_store, notifier)
    a = controller.provision(SPEC, cluster_id=ROUTE)
    controller.open_route(ROUTE, a.id)
    b = controller.provision(SPEC, cluster_id=ROUTE)
    refusing = WebhookClient(status=500)
    try:
        notifier.register_webhook(f"http://127.0.0.1:{free_port()}/gone")
        notifier.register_webhook(refusing.url)
        started = time.monotonic()
        sw = controller.switch("sw-1", ROUTE, a.id, b.id)
    finally:
        refusing.close()
    assert sw.phase is SwitchoverPhase.COMMITTED and time.monotonic() - started < 5
    detail = [e for e in sqlite_store.journal("sw-1") if e.phase is SwitchoverPhase.REDIRECTING][0].detail
    assert detail.startswith("notified 0; failed") and "/gone" in detail and "500" in detail


def test_bad_webhook_urls_are_refused(notifier: Notifier) -> None:
    for bad in ("ftp://x/y", "not a url", "http://"):
        with pytest.raises(ValueError, match="webhook url"):
            notifier.register_webhook(bad)
    assert notifier.webhooks() == []


def test_sse_streams_deliver_notices_over_http(notifier: Notifier) -> None:
    server = SSEServer(notifier)
    received: dict[str, list[dict]] = {"all": [], "web": [], "other": []}
    connected = threading.Barrier(4)

    def listen(name: str, query: str) -> None:
        with httpx.stream("GET", f"{server.url}/events{query}", timeout=10) as response:
            assert response.headers["content-type"] == "text/event-stream"
            event = None
            for line in response.iter_lines():
                if line == ": connected":
                    connected.wait(timeout=5)
                elif line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "switchover":
                    received[name].append(json.loads(line.removeprefix("data: ")))
                    if received[name][-1]["event"] == "committed" or name == "other":
                        return

    listeners = [threading.Thread(target=listen, args=args, daemon=True)
                 for args in (("all", ""), ("web", "?cluster=web"), ("other", "?cluster=other"))]
    try:
        for thread in listeners:
            thread.start()
        connected.wait(timeout=5)
        report = notifier.notify(SwitchoverNotice("sw-9", "web", "web", "upcoming"))
        assert report.ok and len(report.delivered) == 2  # written to both matching streams before returning
        notifier.notify(SwitchoverNotice("sw-9", "web", "web", "committed"))
        notifier.notify(SwitchoverNotice("sw-10", "other", "other", "upcoming"))
        for thread in listeners:
            thread.join(timeout=10)
    finally:
        server.close()
    assert [n["event"] for n in received["all"]] == ["upcoming", "committed"]
    assert [n["event"] for n in received["web"]] == ["upcoming", "committed"]
    assert [(n["switchover_id"], n["event"]) for n in received["other"]] == [("sw-10", "upcoming")]


def test_webhooks_register_over_http(notifier: Notifier) -> None:
    server = SSEServer(notifier)
    try:
        created = httpx.post(f"{server.url}/webhooks", json={"url": "http://127.0.0.1:9/x", "cluster_id": "web"})
        refused = httpx.post(f"{server.url}/webhooks", json={"url": "gopher://x"})
    finally:
        server.close()
    assert created.status_code == 201 and created.json()["cluster_id"] == "web"
    assert refused.status_code == 400 and "webhook url" in refused.json()["error"]
    assert [h.url for h in notifier.webhooks()] == ["http://127.0.0.1:9/x"]


class KeepAliveReceiver:
    """An HTTP/1.1 webhook endpoint that records which client connection each notice came on; with
    `drop_after_reply` it closes every connection after answering, without saying so (a stale
    keep-alive, as an idle timeout on the receiver's side leaves it)."""

    def __init__(self, drop_after_reply: bool = False) -> None:
        self.deliveries: list[tuple[str, tuple[str, int]]] = []

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                notice = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.deliveries.append((notice["event"], self.client_address))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.close_connection = drop_after_reply

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("drop_after_reply", [False, True], ids=["kept-alive", "receiver-drops-idle"])
def test_webhook_notices_ride_one_connection_and_survive_a_dropped_one(notifier: Notifier,
                                                                        drop_after_reply: bool) -> None:
    receiver = KeepAliveReceiver(drop_after_reply)
    try:
        notifier.register_webhook(receiver.url)
        reports = [notifier.notify(SwitchoverNotice("sw-1", "web", "web", event))
                   for event in ("upcoming", "committed", "upcoming")]
    finally:
        receiver.close()
    assert all(report.ok and report.delivered == (receiver.url,) for report in reports)
    assert [event for event, _ in receiver.deliveries] == ["upcoming", "committed", "upcoming"]  # in order, once each
    connections = {address for _, address in receiver.deliveries}
    assert len(connections) == (3 if drop_after_reply else 1)

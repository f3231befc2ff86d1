"""Tell clients of a switchover before their traffic moves: webhooks (POST) and server-sent events.

`Notifier.notify` returns once every webhook answered (or timed out) and every SSE subscriber's
stream has written the event (or timed out), so the controller redirects only after clients were
told. A client that does not answer does not hold a switchover back for longer than `timeout_s`:
the spike will not wait either. The `SSEBroadcaster` is framework-free; the serving API exposes it
with a streaming response, and `SSEServer` exposes it (plus webhook registration) on plain HTTP.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class SwitchoverNotice:
    switchover_id: str
    cluster_id: str
    route: str
    event: str  # "upcoming" (before traffic moves), "committed", "rolled-back"
    at: float = field(default_factory=time.time)
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class Webhook:
    id: str
    url: str
    cluster_id: str | None = None  # None: every cluster


@dataclass(frozen=True)
class DeliveryReport:
    delivered: tuple[str, ...]  # webhook urls and sse subscription ids that got the notice
    failed: dict[str, str]  # target -> why

    @property
    def ok(self) -> bool:
        return not self.failed


class Subscription:
    """One SSE client: a queue of notices and a counter of what its stream has written."""

    def __init__(self, cluster_id: str | None) -> None:
        self.id = f"sse-{uuid.uuid4().hex[:8]}"
        self.cluster_id = cluster_id
        self.queue: queue.Queue[SwitchoverNotice | None] = queue.Queue()
        self.written = 0
        self.closed = False

    def stream(self, keepalive_s: float = 15.0) -> Iterator[bytes]:
        """SSE frames; a comment line every `keepalive_s` keeps proxies from closing an idle stream."""
        yield b": connected\n\n"
        while not self.closed:
            try:
                notice = self.queue.get(timeout=keepalive_s)
            except queue.Empty:
                yield b": keepalive\n\n"
                continue
            if notice is None:
                return
            yield f"id: {notice.switchover_id}:{notice.event}\nevent: switchover\ndata: {notice.to_json()}\n\n".encode()

    def mark_written(self, broadcaster: SSEBroadcaster) -> None:
        with broadcaster.condition:
            self.written += 1
            broadcaster.condition.notify_all()


class SSEBroadcaster:
    def __init__(self) -> None:
        self.condition = threading.Condition()
        self._subscriptions: dict[str, Subscription] = {}
        self._queued: dict[str, int] = {}

    def subscribe(self, cluster_id: str | None = None) -> Subscription:
        subscription = Subscription(cluster_id)
        with self.condition:
            self._subscriptions[subscription.id] = subscription
            self._queued[subscription.id] = 0
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self.condition:
            subscription.closed = True
            self._subscriptions.pop(subscription.id, None)
            self._queued.pop(subscription.id, None)
            subscription.queue.put(None)
            self.condition.notify_all()

    def subscribers(self) -> int:
        with self.condition:
            return len(self._subscriptions)

    def enqueue(self, notice: SwitchoverNotice) -> list[Subscription]:
        """Queue to every matching subscriber; returns them, for `await_written`."""
        with self.condition:
            targets = [s for s in self._subscriptions.values() if s.cluster_id in (None, notice.cluster_id)]
            for subscription in targets:
                self._queued[subscription.id] += 1
                subscription.queue.put(notice)
            return targets

    def await_written(self, targets: list[Subscription], deadline: float) -> DeliveryReport:
        """Wait (until the monotonic `deadline`) for the streams of `targets` to write what was queued."""
        with self.condition:
            def written_all() -> bool:
                return all(s.closed or s.written >= self._queued.get(s.id, 0) for s in targets)

            self.condition.wait_for(written_all, timeout=max(0.0, deadline - time.monotonic()))
            delivered = tuple(s.id for s in targets if not s.closed and s.written >= self._queued.get(s.id, 0))
        failed = {s.id: "stream did not take the event in time" for s in targets if s.id not in delivered}
        return DeliveryReport(delivered, failed)


class Notifier:
    def __init__(self, timeout_s: float = 1.0) -> None:
        self.timeout_s = timeout_s
        self.sse = SSEBroadcaster()
        self._webhooks: dict[str, Webhook] = {}
        self._senders: dict[str, _WebhookSender] = {}  # webhook id -> its kept-alive connection
        self._mutex = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="webhook")

    def register_webhook(self, url: str, cluster_id: str | None = None) -> Webhook:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"webhook url must be http(s)://host[:port]/path, got {url!r}")
        with self._mutex:
            for hook in self._webhooks.values():  # registering twice is harmless
                if (hook.url, hook.cluster_id) == (url, cluster_id):
                    return hook
            hook = Webhook(f"wh-{uuid.uuid4().hex[:8]}", url, cluster_id)
            self._webhooks[hook.id] = hook
            self._senders[hook.id] = _WebhookSender(url)
            return hook

    def unregister_webhook(self, webhook_id: str) -> None:
        with self._mutex:
            if self._webhooks.pop(webhook_id, None) is None:
                raise KeyError(f"unknown webhook {webhook_id!r}")
            self._senders.pop(webhook_id).close()

    def webhooks(self) -> list[Webhook]:
        with self._mutex:
            return list(self._webhooks.values())

    def notify(self, notice: SwitchoverNotice) -> DeliveryReport:
        with self._mutex:
            senders = [(h.url, self._senders[h.id]) for h in self._webhooks.values()
                       if h.cluster_id in (None, notice.cluster_id)]
        body = notice.to_json().encode()
        deadline = time.monotonic() + self.timeout_s
        streams = self.sse.enqueue(notice)
        # Every webhook but the first on the pool; the first on this thread, which would only wait
        # (waking a pool thread costs about as much as a loopback POST).
        futures = {self._pool.submit(sender.post, body, self.timeout_s): url for url, sender in senders[1:]}
        failed: dict[str, str] = {}
        delivered: list[str] = []
        if senders:
            url, sender = senders[0]
            try:
                sender.post(body, self.timeout_s)
                delivered.append(url)
            except Exception as exc:  # noqa: BLE001 - any failure is recorded, none stops the others
                failed[url] = str(exc)
        sse = self.sse.await_written(streams, deadline)
        done, _ = wait(futures, timeout=max(0.0, deadline - time.monotonic()) + 0.5)
        delivered += sse.delivered
        failed.update(sse.failed)
        for future, url in futures.items():
            error = future.exception() if future in done else TimeoutError("no answer in time")
            if error is None:
                delivered.append(url)
            else:
                failed[url] = str(error)
        return DeliveryReport(tuple(delivered), failed)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._mutex:
            for sender in self._senders.values():
                sender.close()


class WebhookRefused(Exception):
    """The webhook answered with a status outside 2xx."""


class _WebhookSender:
    """POSTs notices to one webhook over a kept-alive connection: a new TCP connection per notice
    costs about as much as the rest of a switchover's notify step. Notices to one webhook go one at a
    time, in order. A kept connection the receiver had closed is retried once on a fresh one; a
    receiver may then see a notice twice, and dedupes by (switchover_id, event)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port = parts.hostname, parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def post(self, body: bytes, timeout_s: float) -> None:
        with self._lock:
            for attempt in (0, 1):
                reused = self._conn is not None
                if self._conn is None:
                    self._conn = self._connection_class(self._host, self._port, timeout=timeout_s)
                elif self._conn.sock is not None:
                    self._conn.sock.settimeout(timeout_s)
                try:
                    self._conn.request("POST", self._path, body=body, headers={
                        "Content-Type": "application/json", "User-Agent": "shadowcast"})
                    response = self._conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    self._drop()
                    if reused and attempt == 0:
                        continue  # the receiver closed the idle connection: once more on a fresh one
                    raise
                if response.will_close:
                    self._drop()
                if not 200 <= response.status < 300:
                    raise WebhookRefused(f"webhook answered {response.status} {response.reason}")
                return

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SSEServer:
    """Plain-HTTP face of a `Notifier`: `GET /events[?cluster=ID]` streams notices, `POST /webhooks`
    {"url", "cluster_id"} registers a webhook. Runs in a background thread; `close()` stops it."""

    def __init__(self, notifier: Notifier, host: str = "127.0.0.1", port: int = 0) -> None:
        self.notifier = notifier
        handler = _sse_handler(notifier)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _sse_handler(notifier: Notifier) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            if url.path != "/events":
                return self._json(404, {"error": f"no route {url.path}"})
            cluster = parse_qs(url.query).get("cluster", [None])[0]
            subscription = notifier.sse.subscribe(cluster)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for frame in subscription.stream(keepalive_s=5.0):
                    self.wfile.write(frame)
                    self.wfile.flush()
                    if frame.startswith(b"id:"):
                        subscription.mark_written(notifier.sse)
            except OSError:
                pass  # the client went away
            finally:
                notifier.sse.unsubscribe(subscription)
                self.close_connection = True

        def do_POST(self) -> None:  # noqa: N802
            if urlsplit(self.path).path != "/webhooks":
                return self._json(404, {"error": "no route"})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                hook = notifier.register_webhook(body["url"], body.get("cluster_id"))
            except (ValueError, KeyError) as exc:
                return self._json(400, {"error": f"bad webhook registration: {exc}"})
            self._json(201, asdict(hook))

        def _json(self, status: int, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler

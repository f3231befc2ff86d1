"""One resource of the local driver: a small HTTP service holding per-session state.

Run as `python -m allocator.worker --id ID --announce PATH`. It binds a free loopback port itself
(no port race with other processes), then writes `{"id", "pid", "port"}` to PATH atomically, so the
driver, or a controller restarted after a crash, finds it without having spawned it.

Client API (through HAProxy):
  POST /s/<sid>/incr        -> the session's counter + 1
  PUT  /s/<sid>/kv/<key>    -> store the request body under key
  GET  /s/<sid>             -> the session
Admin API (HAProxy denies /admin from clients):
  GET  /healthz                       liveness + sequence number (503 while a probe fault is set)
  GET  /admin/snapshot?since=N        sessions changed after local sequence number N
  POST /admin/load                    merge sessions; `take_over` also stops forwarding
  POST /admin/handoff {to, since}     final catch-up to `to`, then forward every request there
  POST /admin/fault {fail_probes}     fault injection for tests and drills

State moves by session *version* (bumped on every write, carried with the session), so loading the
same or an older copy twice never overwrites newer data: every load is idempotent. The local
*sequence number* only says what changed since a sync cursor.

Stdlib only: a worker must start in tens of milliseconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


class SessionStore:
    """Sessions plus the forwarding switch, all behind one lock (writes and a handoff exclude each other)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seq = 0
        self.sessions: dict[str, dict] = {}  # sid -> {"v", "counter", "kv", "seq"}
        self.forward_to: str | None = None

    def _touch(self, sid: str) -> dict:
        session = self.sessions.setdefault(sid, {"v": 0, "counter": 0, "kv": {}, "seq": 0})
        self.seq += 1
        session["v"] += 1
        session["seq"] = self.seq
        return session

    def incr(self, sid: str) -> dict:
        session = self._touch(sid)
        session["counter"] += 1
        return session

    def put(self, sid: str, key: str, value: str) -> dict:
        session = self._touch(sid)
        session["kv"][key] = value
        return session

    def changed_since(self, since: int) -> dict[str, dict]:
        return {sid: _public(s) for sid, s in self.sessions.items() if s["seq"] > since}

    def load(self, sessions: dict[str, dict]) -> int:
        applied = 0
        for sid, incoming in sessions.items():
            current = self.sessions.get(sid)
            if current is not None and current["v"] >= incoming["v"]:
                continue
            self.seq += 1
            self.sessions[sid] = {"v": incoming["v"], "counter": incoming["counter"], "kv": dict(incoming["kv"]),
                                  "seq": self.seq}
            applied += 1
        return applied


def _public(session: dict) -> dict:
    return {"v": session["v"], "counter": session["counter"], "kv": dict(session["kv"])}


class PeerConnections:
    """Kept-alive connections to other workers (stdlib, so the worker stays light). A handoff's
    final copy rides one while the source holds its session lock, so a fresh TCP connection (and a
    fresh server thread on the peer) per handoff would stall the source's writers for longer."""

    def __init__(self) -> None:
        self._conns: dict[str, http.client.HTTPConnection] = {}
        self._lock = threading.Lock()

    def post_json(self, base_url: str, path: str, body: dict, timeout: float = 5.0) -> tuple[int, dict]:
        payload = json.dumps(body).encode()
        with self._lock:
            for attempt in (0, 1):
                conn = self._conns.get(base_url)
                reused = conn is not None
                if conn is None:
                    parts = urlsplit(base_url)
                    conn = self._conns[base_url] = http.client.HTTPConnection(parts.hostname, parts.port,
                                                                               timeout=timeout)
                try:
                    conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
                    response = conn.getresponse()
                    raw = response.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    del self._conns[base_url]
                    if reused and attempt == 0:
                        continue  # the peer closed the idle connection; every load is idempotent
                    raise
                if response.will_close:
                    conn.close()
                    del self._conns[base_url]
                return response.status, json.loads(raw or b"{}")
        raise AssertionError("unreachable")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with HAProxy
    disable_nagle_algorithm = True  # headers and body go out together; Nagle would add 40 ms stalls
    server: WorkerServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass

    # --- plumbing ---------------------------------------------------------------------------------

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self, target: str, method: str, body: bytes) -> None:
        """Proxy one request to the worker that took over (only during and after a handoff)."""
        parts = urlsplit(target)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.request(method, self.path, body=body or None, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
        except OSError as exc:
            self._send(502, {"error": f"forwarding to {target} failed: {exc}"})
            return
        finally:
            conn.close()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Forwarded-By", self.server.worker_id)
        self.end_headers()
        self.wfile.write(payload)

    # --- routes -----------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        url = urlsplit(self.path)
        if url.path == "/healthz":
            return self._healthz()
        if url.path == "/admin/snapshot":
            since = int(parse_qs(url.query).get("since", ["0"])[0])
            store = self.server.store
            with store.lock:
                return self._send(200, {"seq": store.seq, "sessions": store.changed_since(since),
                                        "forwarding": store.forward_to})
        if url.path.startswith("/s/"):
            return self._session("GET", url.path, b"")
        self._send(404, {"error": f"no route {url.path}"})

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        body = self._body()
        if path == "/admin/load":
            return self._load(json.loads(body))
        if path == "/admin/handoff":
            return self._handoff(json.loads(body))
        if path == "/admin/fault":
            self.server.fail_probes = bool(json.loads(body).get("fail_probes"))
            return self._send(200, {"fail_probes": self.server.fail_probes})
        if path.startswith("/s/"):
            return self._session("POST", path, body)
        self._send(404, {"error": f"no route {path}"})

    def do_PUT(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        body = self._body()
        if path.startswith("/s/"):
            return self._session("PUT", path, body)
        self._send(404, {"error": f"no route {path}"})

    def _healthz(self) -> None:
        store = self.server.store
        with store.lock:
            body = {"ok": not self.server.fail_probes, "id": self.server.worker_id, "seq": store.seq,
                    "sessions": len(store.sessions), "forwarding": store.forward_to}
        self._send(503 if self.server.fail_probes else 200, body)

    def _session(self, method: str, path: str, body: bytes) -> None:
        parts = path.strip("/").split("/")  # s, sid[, op[, key]]
        store = self.server.store
        with store.lock:
            target = store.forward_to
            if target is None:
                status, reply = self._apply(store, method, parts, body)
        if target is not None:
            return self._forward(target, method, body)
        self._send(status, reply)

    def _apply(self, store: SessionStore, method: str, parts: list[str], body: bytes) -> tuple[int, dict]:
        sid = parts[1] if len(parts) > 1 else ""
        if not sid:
            return 400, {"error": "missing session id"}
        if method == "POST" and parts[2:] == ["incr"]:
            session = store.incr(sid)
        elif method == "PUT" and len(parts) == 4 and parts[2] == "kv":
            session = store.put(sid, parts[3], body.decode())
        elif method == "GET" and len(parts) == 2:
            session = store.sessions.get(sid)
            if session is None:
                return 404, {"error": f"unknown session {sid}", "served_by": self.server.worker_id}
        else:
            return 404, {"error": f"no route {method} /{'/'.join(parts)}"}
        return 200, {"session": sid, **_public(session), "served_by": self.server.worker_id}

    def _load(self, body: dict) -> None:
        store = self.server.store
        with store.lock:
            applied = store.load(body.get("sessions", {}))
            if body.get("take_over"):
                store.forward_to = None
            self._send(200, {"seq": store.seq, "applied": applied})

    def _handoff(self, body: dict) -> None:
        """Last catch-up under the lock, then forward: every write lands before the copy or after it."""
        to, since = body["to"], int(body.get("since", 0))
        store = self.server.store
        with store.lock:
            if store.forward_to == to:
                return self._send(200, {"seq": store.seq, "moved": 0, "already": True})
            if store.forward_to is not None:  # our copy is stale: the newest state lives elsewhere
                return self._send(409, {"error": f"already handed off to {store.forward_to}"})
            delta = store.changed_since(since)
            try:
                status, reply = self.server.peers.post_json(to, "/admin/load", {"sessions": delta, "take_over": True})
            except (OSError, http.client.HTTPException) as exc:
                return self._send(502, {"error": f"handoff to {to} failed: {exc}"})
            if status != 200:
                return self._send(502, {"error": f"handoff to {to} refused: {status} {reply}"})
            store.forward_to = to
            self._send(200, {"seq": store.seq, "moved": len(delta)})


class WorkerServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, worker_id: str, host: str, port: int) -> None:
        super().__init__((host, port), Handler)
        self.worker_id = worker_id
        self.store = SessionStore()
        self.peers = PeerConnections()
        self.fail_probes = False


def announce(path: Path, body: dict) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="shadowcast local worker")
    parser.add_argument("--id", required=True)
    parser.add_argument("--announce", required=True, type=Path, help="file to write {id, pid, port} to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    server = WorkerServer(args.id, args.host, args.port)
    # SIGTERM: stop accepting, then exit; serve_forever's shutdown must run in another thread.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    announce(args.announce, {"id": args.id, "pid": os.getpid(), "port": server.server_address[1]})
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

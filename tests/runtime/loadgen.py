"""Steady load through a route, as its own process: `python tests/runtime/loadgen.py --url URL ...`.

Threads with one keep-alive connection each; every session belongs to one thread, so each reply's
counter must be exactly one more than the last one seen: any other value is a lost or split write.
Runs for `--duration` seconds or until `--stop-file` appears, then reads every session back and
prints one JSON line (requests, failed, state errors, final mismatches, achieved rate).
Stdlib only, so it starts fast and loads nothing it does not need.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from urllib.parse import urlsplit


class Client:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str) -> tuple[int, dict]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            self.conn.request(method, path, headers={"Connection": "keep-alive"})
            response = self.conn.getresponse()
            body = response.read()
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return response.status, json.loads(body) if body.startswith(b"{") else {"raw": body[:200].decode()}
        except (OSError, http.client.HTTPException):
            self.close()  # a fresh connection next time; this request counts as failed
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def worker(url: str, sessions: list[str], interval: float, deadline: float, stop_file: str | None,
           results: dict, lock: threading.Lock) -> None:
    client = Client(url)
    expected = {sid: 0 for sid in sessions}
    requests = failed = state_errors = 0
    errors: list[str] = []
    served_by: dict[str, int] = {}
    next_at = time.monotonic()
    i = 0
    while time.monotonic() < deadline and not (stop_file and i % 20 == 0 and os.path.exists(stop_file)):
        sid = sessions[i % len(sessions)]
        i += 1
        requests += 1
        try:
            status, body = client.request("POST", f"/s/{sid}/incr")
        except (OSError, http.client.HTTPException) as exc:
            failed += 1
            errors.append(f"{sid}: {type(exc).__name__}: {exc}")
        else:
            if status != 200:
                failed += 1
                errors.append(f"{sid}: HTTP {status} {body}")
            else:
                expected[sid] += 1
                served_by[body["served_by"]] = served_by.get(body["served_by"], 0) + 1
                if body["counter"] != expected[sid]:
                    state_errors += 1
                    errors.append(f"{sid}: counter {body['counter']}, expected {expected[sid]}")
                    expected[sid] = body["counter"]
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        elif pause < -1.0:
            next_at = time.monotonic()  # fell far behind: do not burst to catch up
    mismatches = []
    for sid, count in expected.items():
        try:
            status, body = client.request("GET", f"/s/{sid}")
        except (OSError, http.client.HTTPException) as exc:
            mismatches.append(f"{sid}: read failed: {exc}")
            continue
        got = body.get("counter", 0) if status == 200 else 0
        if got != count:
            mismatches.append(f"{sid}: holds {got}, {count} increments were acknowledged")
    client.close()
    with lock:
        results["requests"] += requests
        results["failed"] += failed
        results["state_errors"] += state_errors
        results["errors"].extend(errors[:5])
        results["final_mismatches"].extend(mismatches)
        for key, count in served_by.items():
            results["served_by"][key] = results["served_by"].get(key, 0) + count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rate", type=float, default=400.0, help="target requests per second, all threads")
    parser.add_argument("--duration", type=float, default=10.0, help="upper bound, seconds")
    parser.add_argument("--stop-file")
    parser.add_argument("--ready-file", help="touched once every thread is running")
    args = parser.parse_args()

    sessions = [f"sess{i:04d}" for i in range(args.sessions)]
    results = {"requests": 0, "failed": 0, "state_errors": 0, "errors": [], "final_mismatches": [], "served_by": {}}
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + args.duration
    interval = args.threads / args.rate
    threads = [threading.Thread(target=worker, args=(args.url, sessions[t::args.threads], interval, deadline,
                                                     args.stop_file, results, lock))
               for t in range(args.threads)]
    for thread in threads:
        thread.start()
    if args.ready_file:
        open(args.ready_file, "w").close()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    results["duration_s"] = round(elapsed, 3)
    results["rate"] = round(results["requests"] / elapsed, 1)
    print(json.dumps(results))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

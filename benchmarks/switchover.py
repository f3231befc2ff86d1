"""Switchover benchmark on real processes: worker processes behind HAProxy, the controller journaling
to SQLite, a webhook client notified before every move, and steady load from another process.

    .venv/bin/python benchmarks/switchover.py [--switchovers 100] [--rate 300] [--cold 20]

Measures
  switchover_ms    from the decision (the controller accepting the request) to the route serving
                   from the shadow: catch-up sync, client notification, handoff, HAProxy rebind.
                   `commit_ms` adds the state bookkeeping and the journal's commit after that.
  cold_provision_ms a new worker from nothing to able to take over: process start, health check and
                   state load (the same state the warm shadow already holds).
  warm_vs_cold_speedup = cold_provision_ms_p50 / switchover_ms_p50.
Everything runs at once on this machine (load, HAProxy, workers, controller), as it would in use.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from allocator.controller import Controller  # noqa: E402
from allocator.drivers.local import LocalDriver, kill_runtime  # noqa: E402
from allocator.notify import Notifier  # noqa: E402
from allocator.store import open_store  # noqa: E402
from allocator.types import PoolSpec, SwitchoverKind, SwitchoverPhase  # noqa: E402

ROUTE = "web"
SPEC = PoolSpec(name="web-pool", cold_provision_s=5, warm_activation_s=0.1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class WebhookClient:
    """A client that registered a webhook: counts the notices it receives."""

    def __init__(self) -> None:
        self.received = 0
        client = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                client.received += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_load(url: str, rate: float, workdir: Path) -> tuple[subprocess.Popen, Path]:
    stop, ready = workdir / "stop", workdir / "ready"
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "runtime" / "loadgen.py"), "--url", url,
                             "--rate", str(rate), "--duration", "600", "--sessions", "40", "--threads", "8",
                             "--stop-file", str(stop), "--ready-file", str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"load generator did not start: {proc.stderr.read()}")
        time.sleep(0.01)
    return proc, stop


def run(switchovers: int, rate: float, cold_runs: int, pause_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="shadowcast-bench-") as tmp:
        workdir = Path(tmp)
        runtime = workdir / "runtime"
        driver = LocalDriver(runtime, routes=(ROUTE,), slots_per_route=4)
        store = open_store(f"sqlite:///{workdir / 'state.db'}")
        notifier, webhook = Notifier(timeout_s=1.0), WebhookClient()
        notifier.register_webhook(webhook.url, cluster_id=ROUTE)
        controller = Controller(driver, store, notifier)
        load = None
        try:
            a = controller.provision(SPEC, cluster_id=ROUTE)
            controller.open_route(ROUTE, a.id)
            b = controller.provision(SPEC, cluster_id=ROUTE)
            load, stop = start_load(driver.route_url(ROUTE), rate, workdir)
            time.sleep(1.0)
            controller.refresh_shadows(ROUTE)  # warm = state loaded

            moved, committed = [], []
            active, other = a.id, b.id
            for i in range(switchovers):
                kind = SwitchoverKind.SWITCHOVER if i % 2 == 0 else SwitchoverKind.REVERT
                sw = controller.switch(f"bench-{i}", ROUTE, active, other, kind)
                if sw.phase is not SwitchoverPhase.COMMITTED:
                    raise RuntimeError(f"switchover {sw.id} ended {sw.phase}: {sw.error}")
                marks = controller.marks
                moved.append((marks["traffic-moved"] - marks["decided"]) * 1e3)
                committed.append((marks["finished"] - marks["decided"]) * 1e3)
                active, other = other, active
                time.sleep(pause_s)

            cold = []
            for _ in range(cold_runs):
                started = time.perf_counter()
                fresh = driver.provision(SPEC, warm=True, cluster_id=ROUTE)
                driver.sync(driver.get(active), fresh)
                cold.append((time.perf_counter() - started) * 1e3)
                driver.release(fresh)
                time.sleep(pause_s)

            stop.touch()
            out, err = load.communicate(timeout=120)
            report = json.loads(out.strip().splitlines()[-1])
        finally:
            if load is not None and load.poll() is None:
                load.kill()
            webhook.close()
            notifier.close()
            store.close()
            driver.shutdown()
            kill_runtime(runtime)

    result = {
        "switchovers": switchovers,
        "requests": report["requests"],
        "failed_requests": report["failed"],
        "state_errors": report["state_errors"] + len(report["final_mismatches"]),
        "load_rps": report["rate"],
        "switchover_ms_p50": round(percentile(moved, 50), 2),
        "switchover_ms_p99": round(percentile(moved, 99), 2),
        "switchover_ms_max": round(max(moved), 2),
        "commit_ms_p50": round(percentile(committed, 50), 2),
        "commit_ms_p99": round(percentile(committed, 99), 2),
        "cold_provision_ms_p50": round(percentile(cold, 50), 2),
        "cold_provision_ms_mean": round(statistics.fmean(cold), 2),
        "warm_vs_cold_speedup": round(percentile(cold, 50) / percentile(moved, 50), 2),
        "webhook_notices": webhook.received,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switchovers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=300.0, help="load, requests per second")
    parser.add_argument("--cold", type=int, default=20, help="cold provisions to time")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between measured operations")
    args = parser.parse_args()
    result = run(args.switchovers, args.rate, args.cold, args.pause)
    floors = {"failed_requests == 0": result["failed_requests"] == 0,
              "switchover_ms_p99 <= 100": result["switchover_ms_p99"] <= 100,
              "warm_vs_cold_speedup >= 10": result["warm_vs_cold_speedup"] >= 10}
    for name, ok in floors.items():
        print(f"{'ok  ' if ok else 'MISS'} {name}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

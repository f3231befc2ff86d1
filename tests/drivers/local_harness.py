"""Helpers for tests that run the local driver: real worker processes behind a real HAProxy."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from allocator.drivers.haproxy import find_haproxy
from allocator.drivers.local import LocalDriver, http_json, kill_runtime
from allocator.types import Resource


def require_haproxy() -> str:
    binary = find_haproxy()
    if binary is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy; .ci/run does it)")
    return binary


class LocalHarness:
    def __init__(self, driver: LocalDriver) -> None:
        self.driver = driver

    def incr(self, route: str, session: str) -> int:
        status, body = http_json("POST", self.driver.route_url(route), f"/s/{session}/incr")
        assert status == 200, body
        return body["counter"]

    def counter(self, resource: Resource, session: str) -> int | None:
        endpoint = self.driver.get(resource.id).endpoint
        status, body = http_json("GET", endpoint, f"/admin/snapshot?since=0")
        assert status == 200, body
        entry = body["sessions"].get(session)
        return None if entry is None else entry["counter"]

    def kill(self, resource: Resource) -> None:
        pid = self.driver.pid(resource.id)
        os.kill(pid, signal.SIGKILL)
        proc = self.driver._procs.get(resource.id)  # noqa: SLF001 - reap our own child at once
        if proc is not None:
            proc.wait(timeout=5)


def runtime_processes(runtime_dir: Path) -> list[int]:
    """Pids of live workers and HAProxy recorded in a runtime dir (for orphan checks)."""
    from allocator.drivers.local import _is_worker  # noqa: PLC0415 - test-only use of a helper
    import json

    pids = []
    for announce in (runtime_dir / "workers").glob("*.json"):
        info = json.loads(announce.read_text())
        if _is_worker(info["pid"], info["id"]):
            pids.append(info["pid"])
    return pids


def live_workers(runtime_dir: Path) -> list[int]:
    """Every worker process whose command line points into `runtime_dir`, recorded or not."""
    marker = str(runtime_dir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"allocator.worker" in cmdline and marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def stop_everything(driver: LocalDriver | None, runtime_dir: Path) -> list[int]:
    """Clean-up that works even when a test (or a controller process) left things half-done.

    Returns the workers still running after the driver's own `shutdown()`: leaks, when a driver
    was given."""
    leaked: list[int] = []
    try:
        if driver is not None:
            driver.shutdown()
    finally:
        leaked = live_workers(runtime_dir)
        kill_runtime(runtime_dir)
        for pid in live_workers(runtime_dir):  # not even recorded: kill by what /proc says
            os.kill(pid, signal.SIGKILL)
    return leaked

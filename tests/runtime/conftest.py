"""Fixtures for the runtime: a real PostgreSQL per session, stores on SQLite and PostgreSQL, local
drivers whose processes are killed even when a test fails, and the load-generator process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from allocator.drivers.haproxy import free_port
from allocator.drivers.local import LocalDriver
from allocator.store import Store, open_store
from tests.drivers.local_harness import require_haproxy, stop_everything

REPO = Path(__file__).resolve().parents[2]
LOADGEN = REPO / "tests" / "runtime" / "loadgen.py"
ROUTE = "web"


# --- PostgreSQL ---------------------------------------------------------------------------------------


def _as_postgres(args: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI and this machine run tests as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _open_path_for(user_dir: Path) -> None:
    """Let the postgres user traverse down to its data dir (pytest makes its temp root 0700)."""
    for parent in [user_dir, *user_dir.parents]:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, mode | stat.S_IXOTH)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"PostgreSQL binaries not on PATH: {', '.join(missing)}")
    base = tmp_path_factory.mktemp("postgres")
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        _open_path_for(base)
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(sockets, "postgres", "postgres")
    init = subprocess.run(_as_postgres(["initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
                                        "-E", "UTF8"]), capture_output=True, text=True, timeout=120, cwd=base)
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr or init.stdout}")
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    try:
        subprocess.run(_as_postgres(["pg_ctl", "-D", str(data), "-o", options, "-l", str(base / "log"), "-w",
                                     "-t", "60", "start"]), check=True, capture_output=True, timeout=90, cwd=base)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres(["pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        pid_file = data / "postmaster.pid"
        if pid_file.exists():  # pg_ctl could not stop it: do not leave it running
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def fresh_postgres_database(server_url: str) -> str:
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return fresh_postgres_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        yield opened
    finally:
        opened.close()


# --- local runtime ------------------------------------------------------------------------------------


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Iterator[Path]:
    """A runtime dir whose processes die at teardown, whoever started them."""
    require_haproxy()
    path = tmp_path / "runtime"
    path.mkdir()
    try:
        yield path
    finally:
        stop_everything(None, path)


@pytest.fixture
def local_driver(runtime_dir: Path) -> Iterator[LocalDriver]:
    driver = LocalDriver(runtime_dir, routes=(ROUTE,), slots_per_route=4)
    try:
        yield driver
    finally:
        leaked = stop_everything(driver, runtime_dir)
    assert leaked == [], f"worker processes outlived the driver's shutdown: {leaked}"


class LoadGen:
    """The load generator as a separate process; `finish()` returns its JSON report."""

    def __init__(self, url: str, workdir: Path, *, rate: float, duration: float, sessions: int = 40,
                 threads: int = 8) -> None:
        self.stop_file, ready = workdir / f"stop-{uuid.uuid4().hex[:6]}", workdir / f"ready-{uuid.uuid4().hex[:6]}"
        self.proc = subprocess.Popen(
            [sys.executable, str(LOADGEN), "--url", url, "--rate", str(rate), "--duration", str(duration),
             "--sessions", str(sessions), "--threads", str(threads), "--stop-file", str(self.stop_file),
             "--ready-file", str(ready)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"load generator did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
            time.sleep(0.01)

    def finish(self, timeout: float = 60) -> dict:
        self.stop_file.touch()
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"load generator failed ({self.proc.returncode}): {err}")
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def loadgen(tmp_path: Path) -> Iterator:
    started: list[LoadGen] = []

    def start(url: str, **kwargs) -> LoadGen:
        gen = LoadGen(url, tmp_path, **kwargs)
        started.append(gen)
        return gen

    try:
        yield start
    finally:
        for gen in started:
            gen.kill()

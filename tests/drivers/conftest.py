from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from allocator.drivers.local import LocalDriver
from tests.drivers.contract import ROUTE
from tests.drivers.local_harness import require_haproxy, stop_everything


@pytest.fixture
def local_driver(tmp_path: Path) -> Iterator[LocalDriver]:
    require_haproxy()
    runtime = tmp_path / "runtime"
    driver = None
    try:
        driver = LocalDriver(runtime, routes=(ROUTE,), slots_per_route=4)
        yield driver
    finally:
        leaked = stop_everything(driver, runtime)
    assert leaked == [], f"worker processes outlived the driver's shutdown: {leaked}"

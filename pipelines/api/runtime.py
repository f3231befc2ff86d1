"""The switchover runtime the API drives: controller, state store, notifier and driver together.

Built from `runtime:` settings by `build_runtime`, or handed to `create_app(runtime=...)` by a test
or an embedding process. The allocator is imported only here and only when a runtime is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.api.settings import RuntimeSettings


@dataclass
class Runtime:
    controller: Any  # allocator.controller.Controller
    store: Any  # allocator.store.Store
    notifier: Any  # allocator.notify.Notifier
    driver: Any  # an allocator ResourceDriver

    def ping(self) -> None:
        """What /readyz asks: the state store answers a query."""
        import sqlalchemy as sa

        with self.store.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self.notifier.close()
        close = getattr(self.driver, "close", None)
        if close is not None:
            close()
        self.store.close()


def build_runtime(settings: RuntimeSettings) -> Runtime | None:
    if settings.driver is None:
        return None
    from allocator.controller import Controller
    from allocator.notify import Notifier
    from allocator.store import default_url, open_store

    routes = tuple(settings.routes)
    directory = Path(settings.runtime_dir or ".")
    if settings.driver == "simulated":
        from allocator.drivers.simulated import SimulatedDriver

        driver = SimulatedDriver(routes=routes)
    else:
        from allocator.drivers.local import LocalDriver

        if settings.runtime_dir is None:
            raise ValueError("runtime.runtime_dir is needed by the local driver")
        driver = LocalDriver(directory, routes=routes)
    store = open_store(settings.store_url or default_url(directory))
    notifier = Notifier(timeout_s=settings.notify_timeout_s)
    return Runtime(Controller(driver, store, notifier), store, notifier, driver)

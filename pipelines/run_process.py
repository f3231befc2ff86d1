"""`shadowcast run` as one process: the control loop in the main thread, the serving API (forecast,
plan, switchovers, `/metrics`, `GET /v1/run`) under uvicorn in a second thread, both on the same
model holder, forecast cache, metrics registry and runtime.

Start-up order matters. The store's control-loop lock is taken *before* a driver is built: a second
`shadowcast run` on the same store must not even adopt the first one's workers (building a local
driver kills processes its inventory does not know). The lock is a resource lock of the store
(`flock` next to a SQLite file, a session advisory lock on PostgreSQL), so it dies with its holder
and a SIGKILLed loop never blocks the next one.

With a `health:` section the Resource Health Monitor probes every unit from its own thread, so a
dead active is failed over between passes too; the loop reports what it did.

Shutdown (SIGTERM or SIGINT): the loop finishes the reconcile step in flight, the API stops, then
every unit is released and HAProxy stopped, unless `runtime.keep_workers_on_exit` leaves them
serving for the next run to adopt.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import replace
from typing import Any

from pipelines.api.runtime import Runtime
from pipelines.run_config import ApiSettings, RunConfig

log = logging.getLogger("shadowcast.run")
LOCK_ID = "shadowcast-run:control-loop"  # a resource id no driver hands out
API_START_TIMEOUT_S = 30.0


class LoopLockHeld(RuntimeError):
    """Another control loop acts on this store."""


def open_runtime(config: RunConfig) -> tuple[Runtime, Any]:
    """The store (locked for this loop), then the driver, controller and notifier; returns (runtime, lease)."""
    from allocator.controller import Controller
    from allocator.notify import Notifier
    from allocator.store import ResourceBusyError, open_store

    url = config.store_url()
    store = open_store(url)
    try:
        lease = store.locks.acquire((LOCK_ID,))
    except ResourceBusyError:
        store.close()
        raise LoopLockHeld(
            f"another `shadowcast run` is acting on the state store {_redacted(url)}: it holds the control-loop lock, "
            "and only one loop may act on a store. Stop that one first, or give this one its own "
            "runtime.store_url (or runtime.runtime_dir).") from None
    try:
        driver = _driver(config)
        notifier = Notifier(timeout_s=config.runtime.notify_timeout_s)
        runtime = Runtime(Controller(driver, store, notifier), store, notifier, driver)
        _adopt(runtime, config)
    except BaseException:
        lease.release()
        store.close()
        raise
    return runtime, lease


def _driver(config: RunConfig) -> Any:
    routes = tuple(config.runtime.routes)
    if config.runtime.driver == "simulated":
        from allocator.drivers.simulated import SimulatedDriver

        return SimulatedDriver(routes=routes)
    from allocator.drivers.local import LocalDriver

    assert config.runtime.runtime_dir is not None  # checked by RunRuntimeSettings
    return LocalDriver(config.runtime.runtime_dir, routes=routes, slots_per_route=config.runtime.slots_per_route)


def _adopt(runtime: Runtime, config: RunConfig) -> None:
    """Make the store agree with the driver before acting: the driver owns the truth."""
    from allocator.types import ResourceState, SwitchoverPhase

    store, driver = runtime.store, runtime.driver
    if config.runtime.driver == "local":
        for switchover in runtime.controller.resume():  # a loop that crashed mid-switchover
            log.info("resumed switchover %s: %s", switchover.id, switchover.phase)
    else:
        # The simulated fleet lived in the memory of an earlier process; its switchovers cannot go on.
        for switchover in store.switchovers(unfinished_only=True):
            store.advance(switchover.id, SwitchoverPhase.ROLLED_BACK,
                          error="the simulated fleet of an earlier run is gone")
    known = {r.id: r for r in driver.list()}
    for record in store.resources():
        if record.id not in known:
            store.put_resource(replace(record, state=ResourceState.RELEASED))
    for resource in known.values():
        store.put_resource(resource)


def close_runtime(runtime: Runtime, *, keep_workers: bool) -> None:
    driver = runtime.driver
    try:
        if not keep_workers:
            for resource in driver.list():
                try:
                    runtime.controller.release(resource.id)  # recorded as released in the store too
                except Exception as exc:  # keep going: the driver's shutdown below stops what is left
                    log.warning("could not release %s: %s", resource.id, exc)
        stop = getattr(driver, "close" if keep_workers else "shutdown", None)
        if stop is not None:
            stop()
    finally:
        runtime.notifier.close()


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def serve_settings(config: RunConfig) -> Any:
    from pipelines.api.settings import ServeSettings

    return ServeSettings(model=config.model.location, tracking_uri=config.model.tracking_uri,
                         reload_interval_s=config.model.reload_interval_s, host=config.api.host,
                         port=config.api.port, log_level=config.api.log_level, torch_threads=config.torch_threads,
                         security=config.api.security, forecast=config.api.limits, plan=config.plan)


def start_api(app: Any, api: ApiSettings) -> tuple[Any, threading.Thread]:
    """uvicorn in a thread (it installs no signal handlers there: the main thread keeps them)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=api.host, port=api.port, log_level=api.log_level,
                                           lifespan="on", proxy_headers=False, server_header=False))
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + API_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise ValueError(f"api.port: could not serve on {api.host}:{api.port} (is the port in use?)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the API did not start within {API_START_TIMEOUT_S:g} s")
        time.sleep(0.02)
    return server, thread


def run(config: RunConfig) -> None:
    """Run until SIGTERM or SIGINT. Raises LoopLockHeld when another loop holds the store."""
    from pipelines import run_api
    from pipelines.api.metrics import ServeMetrics
    from pipelines.run import ControlLoop, source_for
    from pipelines.serve import create_app

    _configure_logging()
    runtime, lease = open_runtime(config)
    stop = threading.Event()
    previous = _on_signals(stop)
    try:
        app = create_app(serve_settings(config), runtime=runtime, metrics=ServeMetrics(), follow_model=False,
                         routers=[run_api])
        services = app.state.services
        monitor = _monitor(config, runtime)
        loop = ControlLoop(config, runtime, services, source_for(config), monitor=monitor)
        services.extras[run_api.LOOP] = loop
        loop.metrics.leader.set(1)
        server, thread = start_api(app, config.api)
        if monitor is not None:
            monitor.start()
        log.info("control loop acting on %s through the %s driver (routes %s); API on http://%s:%d",
                 _redacted(config.store_url()), config.runtime.driver, ", ".join(config.runtime.routes),
                 config.api.host, config.api.port)
        try:
            loop.run(stop)
        finally:
            if monitor is not None:
                monitor.stop()  # before the units are released: it would "replace" them otherwise
            server.should_exit = True
            thread.join(timeout=15)
        log.info("stopped after iteration %d", loop.status.iteration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            close_runtime(runtime, keep_workers=config.runtime.keep_workers_on_exit)
        finally:
            lease.release()
            runtime.store.close()


def _monitor(config: RunConfig, runtime: Runtime) -> Any:
    if config.health is None:
        return None
    from allocator.health import HealthMonitor
    from pipelines.api.planning import allocator_inputs
    from pipelines.api.schemas import PlanRequest

    _, spec, _ = allocator_inputs(PlanRequest(), config.plan)  # replacements are units of the plan's pool
    return HealthMonitor(runtime.controller, spec, interval_s=config.health.interval_s,
                         failure_threshold=config.health.failure_threshold)


def _on_signals(stop: threading.Event) -> dict[int, Any]:
    def request_stop(signum: int, _frame: Any) -> None:
        if stop.is_set():
            log.info("still finishing the current step")
        else:
            log.info("%s: stopping after the current step", signal.Signals(signum).name)
        stop.set()

    return {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}


def _configure_logging() -> None:
    logger = logging.getLogger("shadowcast")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

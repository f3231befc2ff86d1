"""The Resource Health Monitor: probes every running unit on an interval and acts on failures.

A unit is failed after `failure_threshold` consecutive failed probes (one slow probe is not an
outage). Then:
  - a warm shadow is released and replaced by a fresh warm unit synced from the active one;
  - an active unit is failed over to a healthy warm shadow (provisioned cold if there is none),
    through the controller, so the move is journaled and locked like any switchover;
  - a standby is released (a revert onto it would fail anyway).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from allocator.controller import Controller, SwitchoverFailed, SwitchoverRejected
from allocator.drivers.base import DriverError
from allocator.store import ResourceBusyError
from allocator.types import PoolSpec, Resource, ResourceState, SwitchoverKind

_WATCHED = (ResourceState.ACTIVE, ResourceState.WARM, ResourceState.STANDBY)


@dataclass(frozen=True)
class ResourceHealth:
    resource_id: str
    state: ResourceState
    ok: bool
    consecutive_failures: int
    latency_ms: float
    detail: str
    probed_at: float  # time.time() of the last probe


@dataclass(frozen=True)
class MonitorAction:
    action: str  # "replaced-shadow", "failed-over", "released-standby", "error"
    resource_id: str
    replacement_id: str = ""
    detail: str = ""
    at: float = 0.0


class HealthMonitor:
    def __init__(self, controller: Controller, spec: PoolSpec, *, interval_s: float = 1.0,
                 failure_threshold: int = 2) -> None:
        if interval_s <= 0 or failure_threshold < 1:
            raise ValueError("interval_s must be > 0 and failure_threshold >= 1")
        self.controller, self.spec = controller, spec
        self.interval_s, self.failure_threshold = interval_s, failure_threshold
        self._health: dict[str, ResourceHealth] = {}
        self._failures: dict[str, int] = {}
        self.actions: list[MonitorAction] = []
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def driver(self):  # noqa: ANN201 - the controller's ResourceDriver
        return self.controller.driver

    def health(self) -> dict[str, ResourceHealth]:
        with self._mutex:
            return dict(self._health)

    def probe_once(self) -> list[MonitorAction]:
        """One round over every watched unit; returns what it did about failures."""
        taken = []
        for resource in self.driver.list():
            if resource.state not in _WATCHED:
                continue
            result = self.driver.probe(resource)
            failures = 0 if result.ok else self._failures.get(resource.id, 0) + 1
            self._failures[resource.id] = failures
            with self._mutex:
                self._health[resource.id] = ResourceHealth(resource.id, resource.state, result.ok, failures,
                                                           result.latency_ms, result.detail, time.time())
            if failures >= self.failure_threshold:
                action = self._act(self.driver.get(resource.id), result.detail)
                if action is not None:
                    taken.append(action)
        self.actions.extend(taken)
        return taken

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="health-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        next_round = time.monotonic()
        while not self._stop.is_set():
            try:
                self.probe_once()
            except Exception as exc:  # noqa: BLE001 - the monitor must outlive any one bad round
                self.actions.append(MonitorAction("error", "", detail=f"{type(exc).__name__}: {exc}", at=time.time()))
            next_round += self.interval_s
            self._stop.wait(max(0.0, next_round - time.monotonic()))

    # --- what to do about a failed unit --------------------------------------------------------------

    def _act(self, resource: Resource, why: str) -> MonitorAction | None:
        try:
            if resource.state is ResourceState.WARM:
                return self._replace_shadow(resource, why)
            if resource.state is ResourceState.ACTIVE:
                return self._fail_over(resource, why)
            if resource.state is ResourceState.STANDBY:
                self._fail_and_release(resource)
                return MonitorAction("released-standby", resource.id, detail=why, at=time.time())
        except (ResourceBusyError, SwitchoverRejected):
            return None  # a switchover holds it right now: look again next round
        except (DriverError, SwitchoverFailed) as exc:
            return MonitorAction("error", resource.id, detail=f"{type(exc).__name__}: {exc}", at=time.time())
        return None

    def _fail_and_release(self, resource: Resource) -> None:
        controller = self.controller
        with controller.store.locks.acquire((resource.id,)):
            failed = self.driver.set_state(resource, ResourceState.FAILED)
            controller.store.put_resource(failed)
        controller.release(resource.id)
        self._forget(resource.id)

    def _replace_shadow(self, resource: Resource, why: str) -> MonitorAction:
        self._fail_and_release(resource)
        replacement = self.controller.provision(self.spec, cluster_id=resource.cluster_id, region=resource.region)
        active = self.controller.active(resource.cluster_id)
        if active is not None:
            self.driver.sync(active, replacement)
        return MonitorAction("replaced-shadow", resource.id, replacement.id, why, time.time())

    def _fail_over(self, resource: Resource, why: str) -> MonitorAction:
        route = next((r for r in self.driver.routes() if resource.id in self.driver.route_members(r)), None)
        if route is None:
            self._fail_and_release(resource)
            return MonitorAction("released-standby", resource.id, detail=f"active outside any route; {why}",
                                 at=time.time())
        shadows = [r for r in self.driver.list(resource.cluster_id)
                   if r.state is ResourceState.WARM and self.driver.probe(r).ok]
        target = shadows[0] if shadows else self.controller.provision(self.spec, cluster_id=resource.cluster_id)
        switchover_id = f"failover/{resource.id}"
        self.controller.switch(switchover_id, route, resource.id, target.id, SwitchoverKind.FAILOVER)
        self.controller.release(resource.id)
        self._forget(resource.id)
        return MonitorAction("failed-over", resource.id, target.id, why, time.time())

    def _forget(self, resource_id: str) -> None:
        self._failures.pop(resource_id, None)
        with self._mutex:
            self._health.pop(resource_id, None)

"""The Switchover Controller: a journaled state machine per switchover, driving a `ResourceDriver`.

    planned -> syncing -> notifying -> redirecting -> committed
         \\________\\___________\\____________\\-> rolling-back -> rolled-back

Every transition is written to the store *before* it is acted on, so a controller restarted after a
crash knows how far each switchover got: `resume()` rolls back those that had not started moving
traffic and completes those that had (each driver call is idempotent, so repeating the interrupted
one is safe). Locks on the two resources keep a second switchover, here or in another controller
process, off them; a switchover id makes every request idempotent.

`reconcile(plan)` takes one idempotent step toward a `Plan`, Kubernetes-controller style.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable

from allocator.drivers.base import DriverError, ResourceDriver, UnknownRouteError
from allocator.notify import Notifier, SwitchoverNotice
from allocator.store import ResourceBusyError, Store, SwitchoverConflictError
from allocator.types import (
    Plan,
    PoolSpec,
    Resource,
    ResourceState,
    Switchover,
    SwitchoverKind,
    SwitchoverMode,
    SwitchoverPhase,
)

# A hook sees ("before" | "after", phase, switchover): "before" runs right after the phase was
# journaled and before it is acted on. Tests and drills use it to pause, fail or die at a step.
Hook = Callable[[str, SwitchoverPhase, Switchover], None]

FAULT_ENV = "SHADOWCAST_CONTROLLER_FAULT"


class SwitchoverRejected(Exception):
    """The request is invalid in the current state; nothing was changed."""


class SwitchoverFailed(Exception):
    """A step failed and the switchover was rolled back (or is being: see `switchover.phase`)."""

    def __init__(self, switchover: Switchover, cause: BaseException) -> None:
        super().__init__(f"switchover {switchover.id!r} failed and ended {switchover.phase}: {cause}")
        self.switchover, self.cause = switchover, cause


class InjectedControllerFault(RuntimeError):
    pass


# What the old active becomes, and what a target must be before, per kind.
_SOURCE_AFTER = {SwitchoverKind.SWITCHOVER: ResourceState.STANDBY, SwitchoverKind.REVERT: ResourceState.WARM,
                 SwitchoverKind.FAILOVER: ResourceState.FAILED}
_TARGET_BEFORE = {SwitchoverKind.SWITCHOVER: ResourceState.WARM, SwitchoverKind.REVERT: ResourceState.STANDBY,
                  SwitchoverKind.FAILOVER: ResourceState.WARM}


@dataclass(frozen=True)
class ReconcileStep:
    action: str  # "open-route", "provision-shadow", "warm-shadow", "release-shadow", "switchover", "revert", ...
    cluster_id: str
    subject: str  # resource or switchover id
    detail: str = ""


class Controller:
    def __init__(self, driver: ResourceDriver, store: Store, notifier: Notifier | None = None, *,
                 hook: Hook | None = None) -> None:
        self.driver, self.store, self.notifier = driver, store, notifier
        self.hook = hook if hook is not None else env_fault_hook()
        # perf_counter marks of the last switchover run here: "decided" (request accepted),
        # "traffic-moved" (the route serves from the target), "finished". For latency metrics.
        self.marks: dict[str, float] = {}

    # --- switchovers -------------------------------------------------------------------------------

    def switch(self, switchover_id: str, route: str, source_id: str, target_id: str,
               kind: SwitchoverKind = SwitchoverKind.SWITCHOVER) -> Switchover:
        """Move `route` from `source_id` to `target_id`; returns the committed switchover.

        Raises SwitchoverRejected (bad request, nothing changed), ResourceBusyError (another
        switchover holds a resource) or SwitchoverFailed (it ran and was rolled back).
        """
        self.marks = {"decided": time.perf_counter()}
        try:
            source, target = self._validate(route, source_id, target_id, kind, resuming=False)
        except SwitchoverRejected:
            # A retried request is valid even though its own earlier run changed the states.
            existing = self._existing(switchover_id)
            if existing is None:
                raise
            self._check_same(existing, route, source_id, target_id, kind)
            if existing.phase.finished:
                return existing
            source, target = self._validate(route, source_id, target_id, kind, resuming=True)
        request = Switchover(switchover_id, kind, target.cluster_id, route, source.id, target.id)
        with self.store.locks.acquire((source.id, target.id)):
            try:
                # PLANNED and SYNCING journaled in one transaction, before anything is synced.
                switchover, created = self.store.begin_switchover(
                    request, detail=f"{kind} {source.id} -> {target.id}", then=SwitchoverPhase.SYNCING)
            except SwitchoverConflictError as exc:
                raise SwitchoverRejected(str(exc)) from None
            if switchover.phase.finished:
                return switchover  # idempotent retry of a finished request
            return self._drive(switchover, fresh=created)

    def _existing(self, switchover_id: str) -> Switchover | None:
        try:
            return self.store.get_switchover(switchover_id)
        except KeyError:
            return None

    def resume(self) -> list[Switchover]:
        """Finish every unfinished switchover (after a crash): complete or roll back each one."""
        finished = []
        for switchover in self.store.switchovers(unfinished_only=True):
            try:
                lease = self.store.locks.acquire((switchover.source_id, switchover.target_id))
            except ResourceBusyError:
                continue  # a live controller is on it
            with lease:
                current = self.store.get_switchover(switchover.id)  # it may have finished meanwhile
                if current.phase.finished:
                    continue
                try:
                    finished.append(self._drive(current, fresh=False))
                except SwitchoverFailed as failed:
                    finished.append(failed.switchover)
        return finished

    def _drive(self, sw: Switchover, *, fresh: bool) -> Switchover:
        """Run a switchover to its end. One found half-done (`fresh=False`: an earlier controller
        began it) is rolled back if traffic had not started to move, and completed if it had."""
        if not fresh and sw.phase is not SwitchoverPhase.REDIRECTING:
            return self._rollback(sw, RuntimeError(sw.error or f"controller restarted during {sw.phase}"))
        try:
            note = ""
            if sw.phase in (SwitchoverPhase.PLANNED, SwitchoverPhase.SYNCING):
                sw, note = self._step(sw, SwitchoverPhase.SYNCING, self._sync, note)
                sw, note = self._step(sw, SwitchoverPhase.NOTIFYING, self._notify_upcoming, note)
            sw, note = self._step(sw, SwitchoverPhase.REDIRECTING, self._redirect_and_settle, note)
            sw = self.store.advance(sw.id, SwitchoverPhase.COMMITTED, detail=note)
        except Exception as exc:  # noqa: BLE001 - any failure of a step means: roll back
            return self._rollback(self.store.get_switchover(sw.id), exc)
        self.marks["finished"] = time.perf_counter()
        self._announce(sw, "committed")
        return sw

    def _step(self, sw: Switchover, phase: SwitchoverPhase, action: Callable[[Switchover], str], note: str
              ) -> tuple[Switchover, str]:
        """Journal `phase` (with what the step before reported), then act; returns what this step reports."""
        if sw.phase is not phase:  # journal first: a crash from here on is known to be in `phase`
            sw = self.store.advance(sw.id, phase, detail=note)
        self.hook("before", phase, sw)
        detail = action(sw)
        self.hook("after", phase, sw)
        return sw, detail

    def _sync(self, sw: Switchover) -> str:
        source, target = self.driver.get(sw.source_id), self.driver.get(sw.target_id)
        if sw.kind is SwitchoverKind.FAILOVER and not self.driver.probe(source).ok:
            return "source is down: the shadow serves what its last background sync gave it"
        return f"copied {self.driver.sync(source, target)} sessions"

    def _notify_upcoming(self, sw: Switchover) -> str:
        if self.notifier is None:
            return ""
        report = self.notifier.notify(SwitchoverNotice(sw.id, sw.cluster_id, sw.route, "upcoming"))
        # A client that does not answer is recorded, not waited for: the spike will not wait either.
        return f"notified {len(report.delivered)}" + (f"; failed {json.dumps(report.failed)}" if report.failed else "")

    def _redirect_and_settle(self, sw: Switchover) -> str:
        source, target = self.driver.get(sw.source_id), self.driver.get(sw.target_id)
        self.driver.redirect(sw.route, source, target)
        self.marks["traffic-moved"] = time.perf_counter()
        self._set(target, ResourceState.ACTIVE)
        after = _SOURCE_AFTER[sw.kind]
        if after is not ResourceState.FAILED and not self.driver.probe(source).ok:
            after = ResourceState.FAILED  # it died during the move: traffic is on the target anyway
        self._set(source, after)
        return self._states(sw)

    def _rollback(self, sw: Switchover, cause: BaseException) -> Switchover:
        if sw.phase is not SwitchoverPhase.ROLLING_BACK:
            sw = self.store.advance(sw.id, SwitchoverPhase.ROLLING_BACK, error=f"{type(cause).__name__}: {cause}")
        source, target = self.driver.get(sw.source_id), self.driver.get(sw.target_id)
        members = self.driver.route_members(sw.route)
        source_ok = self.driver.probe(source).ok
        if target.id in members and source.id not in members:
            if not source_ok:
                # Nothing to go back to: finish the move instead (traffic must land on a live unit).
                self._set(target, ResourceState.ACTIVE)
                self._set(source, ResourceState.FAILED)
                sw = self.store.advance(sw.id, SwitchoverPhase.COMMITTED,
                                        detail=f"rolled forward, source down; {self._states(sw)}")
                self._announce(sw, "committed")
                raise SwitchoverFailed(sw, cause)
            self.driver.redirect(sw.route, target, source)
        if source_ok and source.state not in (ResourceState.ACTIVE, ResourceState.FAILED):
            self._set(source, ResourceState.ACTIVE)  # (a failed-over source stays failed even if it answers)
        elif not source_ok and source.state not in (ResourceState.FAILED, ResourceState.RELEASED):
            self._set(source, ResourceState.FAILED)
        target = self.driver.get(target.id)
        if not self.driver.probe(target).ok:
            if target.state not in (ResourceState.FAILED, ResourceState.RELEASED):
                self._set(target, ResourceState.FAILED)
        elif target.state is not _TARGET_BEFORE[sw.kind]:
            self._set(target, _TARGET_BEFORE[sw.kind])
        sw = self.store.advance(sw.id, SwitchoverPhase.ROLLED_BACK, detail=self._states(sw))
        self._announce(sw, "rolled-back")
        raise SwitchoverFailed(sw, cause)

    def _validate(self, route: str, source_id: str, target_id: str, kind: SwitchoverKind, *, resuming: bool
                  ) -> tuple[Resource, Resource]:
        if route not in self.driver.routes():
            raise SwitchoverRejected(str(UnknownRouteError(route, self.driver.routes())))
        if source_id == target_id:
            raise SwitchoverRejected(f"source and target are the same resource {source_id!r}")
        try:
            source, target = self.driver.get(source_id), self.driver.get(target_id)
        except KeyError as exc:
            raise SwitchoverRejected(str(exc)) from None
        if resuming:
            return source, target
        if source.cluster_id != target.cluster_id:
            raise SwitchoverRejected(f"{source_id!r} serves cluster {source.cluster_id!r}, {target_id!r} "
                                     f"serves {target.cluster_id!r}")
        wanted = _TARGET_BEFORE[kind]
        if target.state is not wanted:
            raise SwitchoverRejected(f"target {target_id!r} is {target.state}; a {kind} needs a {wanted} target")
        if source.state is not ResourceState.ACTIVE and not (
                kind is SwitchoverKind.FAILOVER and source.state is ResourceState.FAILED):
            raise SwitchoverRejected(f"source {source_id!r} is {source.state}, not active")
        if source_id not in self.driver.route_members(route):
            raise SwitchoverRejected(f"source {source_id!r} does not serve route {route!r}")
        # A failover's source may hang: nothing is read from it ahead of time.
        health = (self.driver.probe(target) if kind is SwitchoverKind.FAILOVER
                  else self.driver.prepare_sync(source, target))
        if not health.ok:
            raise SwitchoverRejected(f"target {target_id!r} fails its health probe: {health.detail}")
        return source, target  # busy resources: refused under the locks by `begin_switchover`

    @staticmethod
    def _check_same(sw: Switchover, route: str, source_id: str, target_id: str, kind: SwitchoverKind) -> None:
        if (sw.route, sw.source_id, sw.target_id, sw.kind) != (route, source_id, target_id, kind):
            raise SwitchoverRejected(f"switchover id {sw.id!r} was already used for {sw.kind} {sw.source_id} -> "
                                     f"{sw.target_id} on route {sw.route!r}")

    def _set(self, resource: Resource, state: ResourceState) -> Resource:
        updated = self.driver.set_state(resource, state)
        self.store.put_resource(updated)
        return updated

    def _states(self, sw: Switchover) -> str:
        source, target = self.driver.get(sw.source_id), self.driver.get(sw.target_id)
        return f"{source.id}={source.state} {target.id}={target.state} route={list(self.driver.route_members(sw.route))}"

    def _announce(self, sw: Switchover, event: str) -> None:
        if self.notifier is not None:
            self.notifier.notify(SwitchoverNotice(sw.id, sw.cluster_id, sw.route, event))

    # --- provisioning helpers ----------------------------------------------------------------------

    def provision(self, spec: PoolSpec, *, cluster_id: str, warm: bool = True, region: str | None = None,
                  resource_id: str | None = None) -> Resource:
        resource = self.driver.provision(spec, warm=warm, cluster_id=cluster_id, region=region,
                                         resource_id=resource_id)
        self.store.put_resource(resource)
        return resource

    def open_route(self, route: str, resource_id: str) -> Resource:
        """Give a route its first active unit (idempotent)."""
        resource = self.driver.get(resource_id)
        self.driver.redirect(route, None, resource)
        return self._set(resource, ResourceState.ACTIVE)

    def release(self, resource_id: str) -> None:
        busy = self.store.unfinished_on((resource_id,))
        if busy:
            raise ResourceBusyError(f"resource {resource_id!r} is in switchover {busy[0].id!r}")
        with self.store.locks.acquire((resource_id,)):
            resource = self.driver.get(resource_id)
            self.driver.release(resource)
            self.store.put_resource(self.driver.get(resource_id))

    def refresh_shadows(self, cluster_id: str) -> int:
        """Bring every warm shadow of a cluster up to date with its active unit (state-loaded)."""
        active = self.active(cluster_id)
        if active is None:
            return 0
        copied = 0
        for shadow in self._in_state(cluster_id, ResourceState.WARM):
            try:
                with self.store.locks.acquire((shadow.id,)):
                    copied += self.driver.sync(active, shadow)
            except (ResourceBusyError, DriverError):
                continue  # a switchover has it, or it is failing: the monitor deals with that
        return copied

    def fleet(self) -> dict[str, dict[ResourceState, int]]:
        counts: dict[str, dict[ResourceState, int]] = {}
        for resource in self.driver.list():
            per = counts.setdefault(resource.cluster_id, {})
            per[resource.state] = per.get(resource.state, 0) + 1
        return counts

    def active(self, cluster_id: str) -> Resource | None:
        route = self._route(cluster_id)
        members = self.driver.route_members(route) if route else ()
        for resource in self._in_state(cluster_id, ResourceState.ACTIVE):
            if resource.id in members:
                return resource
        return None

    def _in_state(self, cluster_id: str, state: ResourceState) -> list[Resource]:
        return sorted((r for r in self.driver.list(cluster_id) if r.state is state), key=lambda r: r.id)

    def _route(self, cluster_id: str) -> str | None:
        return cluster_id if cluster_id in self.driver.routes() else None

    # --- reconciliation ----------------------------------------------------------------------------

    def reconcile(self, plan: Plan, spec: PoolSpec, *, plan_id: str, step: int = 0) -> ReconcileStep | None:
        """One idempotent step toward `plan` at forecast step `step`; None once nothing is left to do.

        Order: a route without an active unit first, then switchovers due now, then shadow counts.
        A cluster maps to the route of the same name. Scale-out decisions are not acted on here:
        joining a unit to a route that holds per-session state needs session-partitioned routing,
        which the local runtime does not have (tiered switchovers and reverts are).
        """
        for cluster_id in sorted(plan.clusters):
            cluster = plan.clusters[cluster_id]
            route = self._route(cluster_id)
            if route is None:
                continue
            taken = self._reconcile_cluster(cluster_id, route, cluster, spec, plan_id, step)
            if taken is not None:
                return taken
        return None

    def _reconcile_cluster(self, cluster_id: str, route: str, cluster, spec: PoolSpec, plan_id: str,  # noqa: ANN001
                           step: int) -> ReconcileStep | None:
        active = self.active(cluster_id)
        warm = self._in_state(cluster_id, ResourceState.WARM)
        cold = self._in_state(cluster_id, ResourceState.COLD)
        if cold:  # finish what a previous step (or a crashed controller) started
            ready = self._set(cold[0], ResourceState.WARM)
            return ReconcileStep("warm-shadow", cluster_id, ready.id)
        if active is None:
            if not warm:
                resource = self.provision(spec, cluster_id=cluster_id)
                return ReconcileStep("provision-shadow", cluster_id, resource.id, "for the first active unit")
            self.open_route(route, warm[0].id)
            return ReconcileStep("open-route", cluster_id, warm[0].id)
        for decision in cluster.switchovers:
            if decision.step > step:
                continue  # not due yet
            # ":" not "/": ids travel in URL paths (GET /v1/switchovers/{id}).
            switchover_id = f"{plan_id}:{cluster_id}:{decision.mode}:{decision.step}"
            if self._known(switchover_id):
                continue
            if decision.mode is SwitchoverMode.TIERED and warm:
                target = self._freshest(warm)
                self.switch(switchover_id, route, active.id, target.id, SwitchoverKind.SWITCHOVER)
                return ReconcileStep("switchover", cluster_id, switchover_id, f"{active.id} -> {target.id}")
            if decision.mode is SwitchoverMode.REVERT:
                standby = self._in_state(cluster_id, ResourceState.STANDBY)
                if standby:
                    self.switch(switchover_id, route, active.id, standby[0].id, SwitchoverKind.REVERT)
                    return ReconcileStep("revert", cluster_id, switchover_id, f"{active.id} -> {standby[0].id}")
        wanted = cluster.shadow_units[min(step, len(cluster.shadow_units) - 1)] if cluster.shadow_units else 0
        if len(warm) < wanted:
            resource = self.provision(spec, cluster_id=cluster_id)
            self.driver.sync(active, resource)
            return ReconcileStep("provision-shadow", cluster_id, resource.id, f"{len(warm) + 1}/{wanted} warm")
        if len(warm) > wanted:
            extra = warm[-1]
            self.release(extra.id)
            return ReconcileStep("release-shadow", cluster_id, extra.id, f"{len(warm) - 1}/{wanted} warm")
        return None

    def _known(self, switchover_id: str) -> bool:
        return self._existing(switchover_id) is not None

    def _freshest(self, warm: list[Resource]) -> Resource:
        healthy = [r for r in warm if self.driver.probe(r).ok]
        return (healthy or warm)[0]


# --- fault injection for tests and drills ------------------------------------------------------------


def env_fault_hook() -> Hook:
    """`SHADOWCAST_CONTROLLER_FAULT=<when>:<phase>:<action>[:<seconds>]`, e.g. `before:redirecting:die`.

    Actions: `die` (SIGKILL itself, as a crash would), `fail` (raise: exercises rollback), `pause`
    (sleep, so a test can act in the middle of a step). Unset: no hook.
    """
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return lambda *_: None
    parts = spec.split(":")
    if len(parts) < 3 or parts[0] not in ("before", "after") or parts[2] not in ("die", "fail", "pause"):
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected <before|after>:<phase>:<die|fail|pause>[:<seconds>]")
    when, phase, action = parts[0], SwitchoverPhase(parts[1]), parts[2]
    seconds = float(parts[3]) if len(parts) > 3 else 30.0

    def hook(at: str, current: SwitchoverPhase, sw: Switchover) -> None:
        if (at, current) != (when, phase):
            return
        print(f"fault: {at}:{current}:{action} in switchover {sw.id}", file=sys.stderr, flush=True)
        if action == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "pause":
            time.sleep(seconds)
        else:
            raise InjectedControllerFault(f"injected fault {at} {current}")

    return hook


# --- command line: the controller as its own process ------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from allocator.drivers.local import LocalDriver
    from allocator.store import open_store

    parser = argparse.ArgumentParser(description="shadowcast switchover controller (local driver)")
    parser.add_argument("--store", required=True, help="SQLAlchemy URL of the state store")
    parser.add_argument("--runtime-dir", required=True)
    parser.add_argument("--route", action="append", required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    switch = commands.add_parser("switch")
    switch.add_argument("--id", required=True)
    switch.add_argument("--source", required=True)
    switch.add_argument("--target", required=True)
    switch.add_argument("--on", dest="on_route", required=True)
    switch.add_argument("--kind", default=SwitchoverKind.SWITCHOVER.value, choices=[k.value for k in SwitchoverKind])
    commands.add_parser("resume")
    args = parser.parse_args(argv)

    store = open_store(args.store)
    driver = LocalDriver(args.runtime_dir, routes=tuple(args.route))
    controller = Controller(driver, store)
    try:
        if args.command == "resume":
            done = controller.resume()
            print(json.dumps({"resumed": [{"id": s.id, "phase": s.phase.value} for s in done]}))
            return 0
        try:
            sw = controller.switch(args.id, args.on_route, args.source, args.target, SwitchoverKind(args.kind))
        except SwitchoverFailed as failed:
            sw = failed.switchover
        except (SwitchoverRejected, ResourceBusyError) as exc:
            print(json.dumps({"rejected": str(exc)}))
            return 2
        print(json.dumps({"id": sw.id, "phase": sw.phase.value, "error": sw.error}))
        return 0
    finally:
        driver.close()
        store.close()


if __name__ == "__main__":
    sys.exit(main())


"""In-process, deterministic driver for the trace-replay simulator and controller tests.

Ids are sequential (`sim-0001`, ...), nothing depends on wall time, and every fault is injected
explicitly: `kill` (the unit stops answering), `fail_probes`, `fail_next` (the next call of one
operation raises). Session state is modelled like the local worker's: per-session versions, so a
sync or a redirect behaves the same here as on real processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from allocator.drivers.base import (
    SERVABLE,
    ConflictError,
    DriverError,
    ResourceNotReadyError,
    ResourceUnreachableError,
    RouteStateError,
    UnknownResourceError,
    UnknownRouteError,
    check_transition,
)
from allocator.types import Health, PoolSpec, Resource, ResourceState


class InjectedFault(DriverError):
    """Raised by `fail_next`: a platform error the caller must survive."""


@dataclass
class _Unit:
    resource: Resource
    alive: bool = True
    probes_fail: bool = False
    sessions: dict[str, tuple[int, int]] = field(default_factory=dict)  # sid -> (version, counter)


class SimulatedDriver:
    def __init__(self, routes: tuple[str, ...] = ("default",)) -> None:
        self._units: dict[str, _Unit] = {}
        self._routes: dict[str, list[str]] = {route: [] for route in routes}
        self._faults: dict[str, int] = {}
        self._next = 0
        self.calls: list[tuple[str, str]] = []  # (operation, resource id): what was asked, in order

    # --- fault injection ---------------------------------------------------------------------------

    def fail_next(self, operation: str, times: int = 1) -> None:
        self._faults[operation] = self._faults.get(operation, 0) + times

    def kill(self, resource_id: str) -> None:
        self._unit(resource_id).alive = False

    def fail_probes(self, resource_id: str, failing: bool = True) -> None:
        self._unit(resource_id).probes_fail = failing

    def _maybe_fail(self, operation: str) -> None:
        if self._faults.get(operation, 0) > 0:
            self._faults[operation] -= 1
            raise InjectedFault(f"injected fault in {operation}")

    # --- traffic (what the simulator and tests send through a route) -------------------------------

    def request(self, route: str, session: str) -> int:
        """One request on `route` for `session`; returns the session's counter after it."""
        members = self.route_members(route)
        live = [m for m in members if self._units[m].alive]
        if not live:
            raise ResourceUnreachableError(f"route {route!r} has no live member")
        unit = self._units[live[hash(session) % len(live)]]
        version, counter = unit.sessions.get(session, (0, 0))
        unit.sessions[session] = (version + 1, counter + 1)
        return counter + 1

    def session(self, resource_id: str, session: str) -> int | None:
        entry = self._unit(resource_id).sessions.get(session)
        return None if entry is None else entry[1]

    # --- the protocol ------------------------------------------------------------------------------

    def provision(self, spec: PoolSpec, *, warm: bool, cluster_id: str = "default", region: str | None = None,
                  resource_id: str | None = None) -> Resource:
        if resource_id is not None and resource_id in self._units:
            existing = self._units[resource_id].resource
            if (existing.pool, existing.cluster_id) != (spec.name, cluster_id):
                raise ConflictError(f"resource {resource_id!r} exists with pool {existing.pool!r} "
                                    f"and cluster {existing.cluster_id!r}")
            return existing
        if region is not None and region not in spec.regions:
            raise ValueError(f"region {region!r} is not in pool {spec.name!r}'s regions {spec.regions}")
        self._maybe_fail("provision")
        if resource_id is None:
            self._next += 1
            resource_id = f"sim-{self._next:04d}"
        resource = Resource(id=resource_id, cluster_id=cluster_id, pool=spec.name, region=region or spec.regions[0],
                            state=ResourceState.WARM if warm else ResourceState.COLD, endpoint=f"sim://{resource_id}")
        self._units[resource_id] = _Unit(resource)
        self.calls.append(("provision", resource_id))
        return resource

    def sync(self, source: Resource, target: Resource) -> int:
        src, dst = self._servable(source.id), self._servable(target.id)
        if source.id == target.id:
            raise ValueError("sync needs two different resources")
        self._maybe_fail("sync")
        for unit in (src, dst):
            if not unit.alive:
                raise ResourceUnreachableError(f"resource {unit.resource.id!r} does not answer")
        copied = _merge(dst.sessions, src.sessions)
        self.calls.append(("sync", target.id))
        return copied

    def prepare_sync(self, source: Resource, target: Resource) -> Health:
        if source.id == target.id:
            raise ValueError("prepare_sync needs two different resources")
        self._unit(source.id)  # unknown ids are refused here as by every call
        return self.probe(target)

    def redirect(self, route: str, source: Resource | None, target: Resource) -> None:
        members = self._members(route)
        dst = self._servable(target.id)
        if source is not None:
            self._unit(source.id)
        if target.id in members and (source is None or source.id not in members):
            return  # already done
        if source is not None and source.id not in members:
            raise RouteStateError(f"resource {source.id!r} does not serve route {route!r}")
        if not dst.alive:
            raise ResourceUnreachableError(f"resource {target.id!r} does not answer")
        self._maybe_fail("redirect")
        if source is not None:
            src = self._units[source.id]
            if src.alive:  # the final catch-up: what the source took since the last sync
                _merge(dst.sessions, src.sessions)
            members[members.index(source.id)] = target.id
        else:
            members.append(target.id)
        self.calls.append(("redirect", target.id))

    def detach(self, route: str, resource: Resource) -> None:
        members = self._members(route)
        self._unit(resource.id)
        if resource.id in members:
            members.remove(resource.id)

    def set_state(self, resource: Resource, state: ResourceState) -> Resource:
        unit = self._unit(resource.id)
        current = unit.resource.state
        check_transition(resource.id, current, state)
        if state == current:
            return unit.resource
        if state in SERVABLE and not unit.alive:
            raise ResourceUnreachableError(f"resource {resource.id!r} does not answer")
        self._maybe_fail("set_state")
        if state is ResourceState.RELEASED:
            self._drop_from_routes(resource.id)
        unit.resource = replace(unit.resource, state=state)
        return unit.resource

    def probe(self, resource: Resource) -> Health:
        unit = self._unit(resource.id)
        if unit.resource.state is ResourceState.RELEASED:
            return Health(resource.id, ok=False, latency_ms=0.0, detail="released")
        if not unit.alive:
            return Health(resource.id, ok=False, latency_ms=0.0, detail="unreachable")
        if unit.probes_fail:
            return Health(resource.id, ok=False, latency_ms=0.0, detail="probe failed (injected)")
        return Health(resource.id, ok=True, latency_ms=0.0)

    def release(self, resource: Resource) -> None:
        unit = self._unit(resource.id)
        if unit.resource.state is ResourceState.RELEASED:
            return
        self._drop_from_routes(resource.id)
        unit.alive = False
        unit.resource = replace(unit.resource, state=ResourceState.RELEASED)
        self.calls.append(("release", resource.id))

    def get(self, resource_id: str) -> Resource:
        return self._unit(resource_id).resource

    def list(self, cluster_id: str | None = None) -> list[Resource]:
        return [u.resource for u in self._units.values()
                if u.resource.state is not ResourceState.RELEASED
                and (cluster_id is None or u.resource.cluster_id == cluster_id)]

    def route_members(self, route: str) -> tuple[str, ...]:
        return tuple(self._members(route))

    def routes(self) -> tuple[str, ...]:
        return tuple(self._routes)

    # --- helpers -----------------------------------------------------------------------------------

    def _unit(self, resource_id: str) -> _Unit:
        try:
            return self._units[resource_id]
        except KeyError:
            raise UnknownResourceError(resource_id) from None

    def _servable(self, resource_id: str) -> _Unit:
        unit = self._unit(resource_id)
        if unit.resource.state not in SERVABLE:
            raise ResourceNotReadyError(f"resource {resource_id!r} is {unit.resource.state}; it cannot hold or "
                                        f"serve state until it is warm")
        return unit

    def _members(self, route: str) -> list[str]:
        try:
            return self._routes[route]
        except KeyError:
            raise UnknownRouteError(route, tuple(self._routes)) from None

    def _drop_from_routes(self, resource_id: str) -> None:
        for members in self._routes.values():
            if resource_id in members:
                members.remove(resource_id)


def _merge(into: dict[str, tuple[int, int]], source: dict[str, tuple[int, int]]) -> int:
    """Newer versions win, so merging twice changes nothing (the worker's rule)."""
    copied = 0
    for sid, (version, counter) in source.items():
        if into.get(sid, (0, 0))[0] < version:
            into[sid] = (version, counter)
            copied += 1
    return copied

"""The `ResourceDriver` seam: what the controller and the health monitor may ask of a platform.

Every call is idempotent (repeating it after a crash is harmless) and either does what it says or
raises one of the errors below with the driver's state unchanged. Every driver passes the shared
contract suite in `tests/drivers/contract.py`.

The driver owns the truth about its resources; a `Resource` is a snapshot of it (`get` refreshes).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from allocator.types import Health, PoolSpec, Resource, ResourceState


class DriverError(Exception):
    """Base of every error a driver raises on purpose."""


class UnknownResourceError(DriverError, KeyError):
    def __init__(self, resource_id: str) -> None:
        super().__init__(resource_id)
        self.resource_id = resource_id

    def __str__(self) -> str:
        return f"unknown resource {self.resource_id!r}"


class UnknownRouteError(DriverError, KeyError):
    def __init__(self, route: str, known: tuple[str, ...] = ()) -> None:
        super().__init__(route)
        self.route, self.known = route, known

    def __str__(self) -> str:
        return f"unknown route {self.route!r}; known: {', '.join(self.known) or 'none'}"


class InvalidTransitionError(DriverError):
    def __init__(self, resource_id: str, current: ResourceState, wanted: ResourceState, why: str = "") -> None:
        self.resource_id, self.current, self.wanted = resource_id, current, wanted
        super().__init__(f"resource {resource_id!r}: cannot go from {current} to {wanted}" + (f" ({why})" if why else ""))


class ResourceNotReadyError(DriverError):
    """The resource cannot do what was asked in its current state (e.g. take traffic while cold)."""


class ConflictError(DriverError):
    """An idempotency key was reused for a different request."""


class ResourceUnreachableError(DriverError):
    """The resource's process or endpoint does not answer."""


class RouteStateError(DriverError):
    """A redirect's source does not serve the route (and the target does not either)."""


# Where each state may go. RELEASED is terminal; FAILED may only be released. COLD -> ACTIVE is
# allowed only through WARM (a cold unit has no state loaded yet).
TRANSITIONS: dict[ResourceState, frozenset[ResourceState]] = {
    ResourceState.COLD: frozenset({ResourceState.WARM, ResourceState.FAILED, ResourceState.RELEASED}),
    ResourceState.WARM: frozenset({ResourceState.ACTIVE, ResourceState.STANDBY, ResourceState.FAILED,
                                   ResourceState.RELEASED}),
    ResourceState.ACTIVE: frozenset({ResourceState.STANDBY, ResourceState.WARM, ResourceState.FAILED,
                                     ResourceState.RELEASED}),
    ResourceState.STANDBY: frozenset({ResourceState.ACTIVE, ResourceState.WARM, ResourceState.FAILED,
                                      ResourceState.RELEASED}),
    ResourceState.FAILED: frozenset({ResourceState.RELEASED}),
    ResourceState.RELEASED: frozenset(),
}

# States in which a resource runs with its state loaded and may take a route's traffic.
SERVABLE = frozenset({ResourceState.WARM, ResourceState.ACTIVE, ResourceState.STANDBY})


def check_transition(resource_id: str, current: ResourceState, wanted: ResourceState) -> None:
    if wanted != current and wanted not in TRANSITIONS[current]:
        raise InvalidTransitionError(resource_id, current, wanted)


@runtime_checkable
class ResourceDriver(Protocol):
    def provision(self, spec: PoolSpec, *, warm: bool, cluster_id: str = "default", region: str | None = None,
                  resource_id: str | None = None) -> Resource:
        """A new unit of `spec`: WARM (started, health-checked, able to serve) or COLD (starting).

        `resource_id` is the idempotency key: provisioning an id that exists returns it unchanged
        (ConflictError if it was provisioned with another pool or cluster).
        """
        ...

    def sync(self, source: Resource, target: Resource) -> int:
        """Copy the session state of `source` to `target`; returns the number of sessions copied.

        Repeating it copies only what changed since the last sync of the same pair.
        """
        ...

    def prepare_sync(self, source: Resource, target: Resource) -> Health:
        """Probe `target` (as `probe` does) before a `sync` from `source`, changing nothing.

        A driver may read the source's state meanwhile, for the sync of this pair that follows:
        that sync then copies the state as of this call at least, and what changed after it is
        copied by the next sync or by the redirect's catch-up (which never loses a write).
        """
        ...

    def redirect(self, route: str, source: Resource | None, target: Resource) -> None:
        """Move `route`'s traffic from `source` to `target` with no request lost.

        `source=None` adds `target` to the route (opening it, or scaling out). A no-op when `target`
        already serves the route and `source` does not. States are not changed: that is `set_state`.
        """
        ...

    def detach(self, route: str, resource: Resource) -> None:
        """Take `resource` out of `route` (scale-in); no-op when it is not in it."""
        ...

    def set_state(self, resource: Resource, state: ResourceState) -> Resource:
        """Record a lifecycle transition (COLD -> WARM waits until the unit is ready)."""
        ...

    def probe(self, resource: Resource) -> Health:
        """One health check; a failing probe is an `ok=False` Health, not an exception."""
        ...

    def release(self, resource: Resource) -> None:
        """Stop the unit and free it; the id stays known as RELEASED."""
        ...

    def get(self, resource_id: str) -> Resource: ...

    def list(self, cluster_id: str | None = None) -> list[Resource]:
        """Every resource not yet released."""
        ...

    def route_members(self, route: str) -> tuple[str, ...]:
        """Ids of the resources that take `route`'s traffic now."""
        ...

    def routes(self) -> tuple[str, ...]: ...

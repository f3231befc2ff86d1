"""Value types shared by the policy, the controller and the drivers.

Plain dataclasses and enums only: no torch, no I/O. Times are seconds; the policy converts them
to forecast steps with the forecast's frequency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


# --- policy inputs and outputs -------------------------------------------------------------------


class ResourceType(StrEnum):
    COMPUTE = "compute"
    STORAGE = "storage"
    NETWORK = "network"


@dataclass(frozen=True)
class PoolSpec:
    """What one unit of a pool is and how fast it comes up.

    `cold_provision_s`: from nothing to serving (boot, image pull, state load).
    `warm_activation_s`: from warm shadow to serving (traffic redirect only).
    `regions`: where units may be placed; shadows are spread over them for resilience.
    """

    name: str = "default"
    resource_type: ResourceType = ResourceType.COMPUTE
    capacity_per_unit: float = 1.0
    cold_provision_s: float = 300.0
    warm_activation_s: float = 5.0
    regions: tuple[str, ...] = ("local",)

    def __post_init__(self) -> None:
        if self.capacity_per_unit <= 0:
            raise ValueError(f"PoolSpec {self.name!r}: capacity_per_unit must be > 0, got {self.capacity_per_unit}")
        if self.cold_provision_s < 0 or self.warm_activation_s < 0:
            raise ValueError(f"PoolSpec {self.name!r}: provisioning and activation times must be >= 0")
        if self.warm_activation_s > self.cold_provision_s:
            raise ValueError(f"PoolSpec {self.name!r}: warm activation cannot be slower than a cold provision")
        if not self.regions:
            raise ValueError(f"PoolSpec {self.name!r}: at least one region is needed")


@dataclass(frozen=True)
class CostModel:
    """Prices per unit-hour: an active unit, and a unit of capacity left short of demand.

    Warm shadows and standby units cost `warm_fraction` of an active unit (idle but running).
    `unserved_penalty` is charged per unit-hour of *capacity* short (unserved demand divided by the
    pool's `capacity_per_unit`), so every ratio the policy takes from these prices is unit-free.
    """

    active_unit_cost: float = 1.0
    warm_fraction: float = 0.3
    unserved_penalty: float = 20.0

    def __post_init__(self) -> None:
        if self.active_unit_cost <= 0:
            raise ValueError(f"active_unit_cost must be > 0, got {self.active_unit_cost}")
        if not 0 <= self.warm_fraction <= 1:
            raise ValueError(f"warm_fraction must lie in [0, 1], got {self.warm_fraction}")
        if self.unserved_penalty < 0:
            raise ValueError(f"unserved_penalty must be >= 0, got {self.unserved_penalty}")


@dataclass(frozen=True)
class ClusterFleet:
    """What one cluster has right now, in units."""

    active: int = 0
    warm: int = 0
    standby: int = 0
    provisioning: int = 0


@dataclass(frozen=True)
class FleetState:
    clusters: dict[str, ClusterFleet] = field(default_factory=dict)

    def of(self, cluster_id: str) -> ClusterFleet:
        return self.clusters.get(cluster_id, ClusterFleet())


class SwitchoverMode(StrEnum):
    SCALE_OUT = "scale-out"  # warm shadow units join the active set
    TIERED = "tiered"  # a warm larger or better-placed replica takes over; the old active goes to standby
    REVERT = "revert"  # the spike did not come: standby back to active, shadow back to warm


@dataclass(frozen=True, slots=True)  # many per plan: smaller, fewer GC passes
class SwitchoverDecision:
    cluster_id: str
    step: int  # forecast step at which traffic must already be on the shadow
    mode: SwitchoverMode
    units: int
    probability: float  # P(demand > active capacity within the lead time) that triggered it


@dataclass(frozen=True)
class PolicyConfig:
    """Knobs of the quantile policy; every level left `None` is derived from the `CostModel`.

    `active_level`/`pool_level`: quantile levels of demand for the active set and for active + shadow.
    `switch_threshold`: switch to a shadow when P(demand > active capacity within the cold lead time)
    exceeds it (default: 1 - active level, the same newsvendor trade-off); `revert_threshold`: go back
    when that probability falls below it (default: half the switch threshold, so decisions do not flap).
    `shared_pool`: size one shadow pool for all clusters from the joint sample paths.
    `region_resilient`: size and spread shadows so that losing any one region still leaves the pool's
    quantile covered (needs two or more regions in the `PoolSpec`).
    """

    active_level: float | None = None
    pool_level: float | None = None
    switch_threshold: float | None = None
    revert_threshold: float | None = None
    mode: SwitchoverMode = SwitchoverMode.SCALE_OUT
    shared_pool: bool = False
    region_resilient: bool = False

    def __post_init__(self) -> None:
        for name in ("active_level", "pool_level", "switch_threshold", "revert_threshold"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise ValueError(f"PolicyConfig.{name} must lie in (0, 1), got {value}")
        if self.mode is SwitchoverMode.REVERT:
            raise ValueError("PolicyConfig.mode must be scale-out or tiered; revert is a decision, not a mode")


@dataclass(frozen=True, slots=True)  # many per plan: smaller, fewer GC passes
class ClusterPlan:
    """Desired capacity of one cluster per forecast step (tuples of length `horizon`, in units).

    `shadow_units[h]` warm units on top of `active_units[h]`; `exceed_probability[h]` is
    P(demand at step h > the fleet's current active capacity), the figure switchovers act on.
    """

    cluster_id: str
    active_units: tuple[int, ...]
    shadow_units: tuple[int, ...]
    quantile_level: float  # level of the active set
    pool_level: float = 0.0  # level of active + shadow over the cold lead time
    exceed_probability: tuple[float, ...] = ()
    switchovers: tuple[SwitchoverDecision, ...] = ()


@dataclass(frozen=True)
class Plan:
    clusters: dict[str, ClusterPlan]
    shared_shadow_units: tuple[int, ...] = ()  # joint pool over all clusters, when shared pools are on
    placement: dict[str, int] = field(default_factory=dict)  # region -> shadow units (first step)


# --- runtime: resources behind a driver ----------------------------------------------------------


class ResourceState(StrEnum):
    COLD = "cold"  # provisioning, not yet able to serve
    WARM = "warm"  # shadow: started, health-checked, state loaded, no traffic
    ACTIVE = "active"  # receiving traffic
    STANDBY = "standby"  # former active kept warm so a switchover can revert
    FAILED = "failed"
    RELEASED = "released"


@dataclass(frozen=True)
class Resource:
    id: str
    cluster_id: str
    pool: str
    region: str
    state: ResourceState
    endpoint: str = ""  # e.g. http://127.0.0.1:PORT for the local driver


@dataclass(frozen=True)
class Health:
    resource_id: str
    ok: bool
    latency_ms: float
    detail: str = ""


class SwitchoverKind(StrEnum):
    """What happens to the old active once traffic has moved."""

    SWITCHOVER = "switchover"  # a warm shadow takes over; the old active goes to standby
    REVERT = "revert"  # the spike did not come: a standby takes back; the active goes back to warm
    FAILOVER = "failover"  # the active failed: a warm shadow takes over; the old active stays failed


class SwitchoverPhase(StrEnum):
    PLANNED = "planned"
    SYNCING = "syncing"
    NOTIFYING = "notifying"
    REDIRECTING = "redirecting"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"

    @property
    def finished(self) -> bool:
        return self in (SwitchoverPhase.COMMITTED, SwitchoverPhase.ROLLED_BACK)


@dataclass(frozen=True)
class Switchover:
    """One move of a route's traffic from `source_id` to `target_id`; `id` is the idempotency key."""

    id: str
    kind: SwitchoverKind
    cluster_id: str
    route: str
    source_id: str
    target_id: str
    phase: SwitchoverPhase = SwitchoverPhase.PLANNED
    error: str = ""

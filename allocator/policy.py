"""The quantile policy: `Forecast × FleetState × CostModel × PoolSpec → Plan`. Pure: no I/O, no clock.

Three numbers do the work, all read off the forecast's sample paths (converted to capacity units):
- the **active set** at step h is the `active_level` quantile of demand at h;
- **active + shadow** is the `pool_level` quantile of the *largest* demand over [h, h + cold lead]:
  whatever demand can reach before a cold unit could be provisioned must already be warm;
- a **switchover** to a shadow is due when P(demand > the fleet's active capacity) crosses a threshold.
Both levels come from the prices (newsvendor critical ratios), not from hand-set constants, and a
shared pool over several clusters is a quantile of the *sum* of their excess demand, path by path.

Quantiles are the inverted empirical CDF (the newsvendor optimum of a discrete distribution: the
smallest value whose CDF reaches the level); levels finer than the samples resolve extend the spread
above the median with a normal tail, so online calibration (`allocator.calibration`) can push a
level past what a finite sample shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from allocator.types import (
    ClusterFleet,
    ClusterPlan,
    CostModel,
    FleetState,
    Plan,
    PolicyConfig,
    PoolSpec,
    SwitchoverDecision,
    SwitchoverMode,
)
from forecasting.forecast import Forecast

MAX_LEVEL = 1 - 1e-12  # levels are kept inside (0, MAX_LEVEL]; the tail beyond means nothing
_TOLERANCE = 1e-9  # a forecast of 3.0000000001 units is 3 units, not 4
_BLOCK_BYTES = 2**21  # `plan` takes clusters in blocks of about this many bytes of sample paths


@dataclass(frozen=True)
class QuantileLevels:
    active: float
    pool: float


def critical_ratio(underage: float, overage: float) -> float:
    """Newsvendor: the cost-minimising service level cu / (cu + co), clipped to [0, 1]."""
    if underage < 0 or overage < 0:
        raise ValueError(f"underage and overage costs must be >= 0, got {underage} and {overage}")
    if underage + overage == 0:
        return 0.5
    return min(1.0, max(0.0, underage / (underage + overage)))


def levels_from_costs(costs: CostModel) -> QuantileLevels:
    """Quantile levels for the active set and for active + shadow, from the prices.

    An active unit that turns out idle could have been warm: overage (1 - w)·c; a unit short costs
    the penalty less that saving. A warm unit that is never needed wastes w·c; a unit short of the
    whole pool costs the penalty less that. With c = 1, w = 0.3, p = 20: 0.965 and 0.985.
    """
    c, w, p = costs.active_unit_cost, costs.warm_fraction, costs.unserved_penalty
    active = critical_ratio(max(p - (1 - w) * c, 0.0), (1 - w) * c)
    pool = critical_ratio(max(p - w * c, 0.0), w * c)
    return QuantileLevels(min(active, MAX_LEVEL), min(max(pool, active), MAX_LEVEL))


def step_seconds(freq: str) -> float:
    return pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).total_seconds()


def lead_steps(seconds: float, step_s: float) -> int:
    """Whole steps a delay of `seconds` spans (a 5 s activation on 60 s steps spans one)."""
    return int(math.ceil(seconds / step_s - _TOLERANCE))


@dataclass(frozen=True)
class Leads:
    """How many steps ahead, beyond the current one, the active set and the pool must cover."""

    active: int  # the active set carries demand over [h, h + active] (until an activation lands)
    pool: int  # active + shadow carries it over [h, h + pool] (until a cold unit lands)


def timing_leads(spec: PoolSpec, step_s: float, costs: CostModel) -> Leads:
    """Cover the whole steps an activation (a cold provision) takes; cover the step in which it
    lands part-way only if being that fraction late costs more than starting a step early.

    A 5 s activation on 60 s steps lands 1/12 into the step: pre-activating a unit one step early
    costs (1 - w)·c, arriving late costs p/12 per unit short, so with c = 1, w = 0.3 it pays from
    p = 8.4. A 300 s boot on hourly steps lands 1/12 into the step: holding a warm unit a step
    longer costs w·c. On steps that the delays divide exactly there is no choice to make.
    """
    c, w, p = costs.active_unit_cost, costs.warm_fraction, costs.unserved_penalty

    def lead(seconds: float, early_cost: float) -> int:
        exact = seconds / step_s
        whole = int(math.floor(exact + _TOLERANCE))
        late = exact - whole
        return whole + int(late > _TOLERANCE and p * late > early_cost)

    return Leads(lead(spec.warm_activation_s, (1 - w) * c), lead(spec.cold_provision_s, w * c))


def quantile_of_sorted(sorted_samples: np.ndarray, level: np.ndarray | float) -> np.ndarray:
    """Inverted-CDF quantile of samples sorted along the last axis; `level` broadcasts against the rest.

    Above level 1 - 1/(2S) the distance from the median to the largest sample grows like an
    exponential tail's, log(1 / (1 - level)), so levels keep meaning something past the sample
    (demand spikes have heavier tails than a Gaussian's).
    """
    count = sorted_samples.shape[-1]
    level = np.asarray(level, dtype=float)
    shape = np.broadcast_shapes(sorted_samples.shape[:-1], level.shape)
    values = np.broadcast_to(sorted_samples, (*shape, count))
    index = np.clip(np.ceil(level * count - _TOLERANCE).astype(np.int64) - 1, 0, count - 1)
    result = np.take_along_axis(values, np.broadcast_to(index, shape)[..., None], axis=-1)[..., 0]
    top = 1 - 0.5 / count
    if count > 1 and np.any(level > top):
        median = values[..., (count + 1) // 2 - 1]
        stretch = np.log1p(-np.clip(level, top, MAX_LEVEL)) / np.log1p(-top)
        result = np.where(level > top, median + (values[..., -1] - median) * stretch, result)
    return result


def empirical_quantile(samples: np.ndarray, level: np.ndarray | float, axis: int = 1) -> np.ndarray:
    """`quantile_of_sorted` for unsorted samples along `axis` (the sample axis of a Forecast by default)."""
    return quantile_of_sorted(np.sort(np.moveaxis(samples, axis, -1), axis=-1), level)


def window_max(samples: np.ndarray, window: int, axis: int = -1) -> np.ndarray:
    """Largest value over [h, h + window] along `axis` (the horizon), cut at its end; a new array.

    Windows double each pass (the max over 2w steps is that of two w-step windows, w apart), so a
    long lead costs log2(window) passes over the paths, not one per step; a last single step folds
    the samples themselves in, in place, sparing a second buffer (leads of two steps are common).
    """
    source = np.moveaxis(samples, axis, 0)  # a view: slicing its first axis slices `axis`
    reach = min(window, source.shape[0] - 1)
    if reach < 1:
        return samples.copy()
    held = [np.empty_like(samples)]
    span, current, turn = 1, source, 0  # `current[h]` holds the largest value over [h, h + span)
    while span <= reach:
        step = min(span, reach + 1 - span)
        if step == 1 and span > 1:
            np.maximum(current[:-span], source[span:], out=current[:-span])
        else:
            if turn == len(held):
                held.append(np.empty_like(samples))
            target = np.moveaxis(held[turn], axis, 0)
            np.maximum(current[:-step], current[step:], out=target[:-step])
            target[-step:] = current[-step:]  # windows already cut at the end
            current, turn = target, 1 - turn
        span += step
    return held[1 - turn]


def units(capacity: np.ndarray) -> np.ndarray:
    """Whole units covering a capacity, never negative."""
    return np.maximum(np.ceil(np.asarray(capacity) - _TOLERANCE), 0).astype(np.int64)


@dataclass(frozen=True)
class PoolSizing:
    """Per cluster and step (`[clusters, horizon]`): units to keep active and active + shadow in total."""

    active: np.ndarray
    total: np.ndarray
    pool_excess: np.ndarray  # pool-level quantile of (lead-window demand - active), capacity units, >= 0

    @property
    def shadow(self) -> np.ndarray:
        return self.total - self.active


def size_pools(
    demand_units: np.ndarray, active_level: np.ndarray | float, pool_level: np.ndarray | float,
    cold_lead: int, min_active: int = 0, active_lead: int = 0,
) -> PoolSizing:
    """Active and total units from sample paths `[clusters, samples, horizon]` in capacity units.

    Levels are scalars or one per cluster. The total covers the largest demand over the cold lead
    time: a shadow must be warm before the spike by at least the time a cold unit takes. The active
    set covers the largest over `active_lead` steps (an activation that lands late).
    """
    paths = np.moveaxis(demand_units, 1, -1).copy()  # a copy: `sorted_windows` sorts it in place
    return sizing_of_sorted(*sorted_windows(paths, active_lead, cold_lead), active_level, pool_level, min_active)


def steps_major(samples: np.ndarray, scale: float) -> np.ndarray:
    """Sample paths `[clusters, samples, horizon]` divided by `scale`, as a new C-ordered
    `[clusters, horizon, samples]` array: each step's paths contiguous, so numpy's vectorised sort
    runs on them directly and windows over steps shift whole blocks (one pass does both)."""
    return np.divide(np.moveaxis(samples, 1, -1), scale, order="C")


def sorted_windows(paths: np.ndarray, active_lead: int, cold_lead: int) -> tuple[np.ndarray, np.ndarray]:
    """`[clusters, horizon, samples]` sorted over paths: the largest demand over [h, h + active_lead]
    and over [h, h + cold_lead]. Consumes `paths` (steps-major, C-ordered): with no active lead it is
    sorted in place and returned, sparing a copy."""
    reach = window_max(paths, cold_lead, axis=1)
    point = window_max(paths, active_lead, axis=1) if active_lead else paths
    point.sort(axis=-1)
    reach.sort(axis=-1)
    return point, reach


def sizing_of_sorted(
    point: np.ndarray, reach: np.ndarray, active_level: np.ndarray | float, pool_level: np.ndarray | float,
    min_active: int,
) -> PoolSizing:
    """`size_pools` from the windows `sorted_windows` returns."""
    clusters = point.shape[0]
    a_level = np.broadcast_to(np.asarray(active_level, dtype=float), (clusters,))[:, None]
    p_level = np.broadcast_to(np.asarray(pool_level, dtype=float), (clusters,))[:, None]
    active = np.maximum(units(quantile_of_sorted(point, a_level)), min_active)
    pool_value = quantile_of_sorted(reach, p_level)
    total = np.maximum(active, units(pool_value))
    return PoolSizing(active, total, np.maximum(pool_value - active, 0.0))


def shared_excess(demand_units: np.ndarray, active: np.ndarray, pool_level: float, cold_lead: int) -> np.ndarray:
    """`[horizon]` pool-level quantile of the summed excess over active, across clusters, path by path."""
    excess = np.maximum(window_max(demand_units, cold_lead) - active[:, None, :], 0.0).sum(axis=0)  # [S, H]
    return quantile_of_sorted(np.sort(excess.T, axis=-1), pool_level)


def shared_shadow_units(sizing: PoolSizing, demand_units: np.ndarray, pool_level: float, cold_lead: int) -> np.ndarray:
    """One warm pool for all clusters, `[horizon]` units.

    Sized from the joint paths, so spikes that do not coincide share units. Quantiles are not
    sub-additive (two independent 4 % spikes give a 7.8 % chance that one happens), so the joint
    figure is capped by the sum of separate pools: sharing never costs more than not sharing.
    """
    joint = units(shared_excess(demand_units, sizing.active, pool_level, cold_lead))
    return np.minimum(joint, sizing.shadow.sum(axis=0))


def region_resilient_total(total: np.ndarray, regions: int) -> np.ndarray:
    """Fewest units which, spread evenly over `regions`, still number `total` after losing any one.

    Losing a region removes ceil(n / R) of n evenly spread units, so n = T + ceil(T / (R - 1)).
    """
    total = np.asarray(total, dtype=np.int64)
    if regions < 2:
        return total
    return total + -(-total // (regions - 1))


def spread(count: int, regions: tuple[str, ...]) -> dict[str, int]:
    """Units per region, as even as whole units allow (the first regions take the remainder)."""
    base, extra = divmod(int(count), len(regions))
    return {region: base + (i < extra) for i, region in enumerate(regions)}


def exceed_probability(paths: np.ndarray, capacity_units: np.ndarray) -> np.ndarray:
    """`[clusters, horizon]` P(demand > capacity) from steps-major paths `[clusters, horizon, samples]`
    (`steps_major`); capacity is one figure per cluster."""
    over = (paths > np.asarray(capacity_units, dtype=float)[:, None, None]).sum(axis=-1, dtype=np.int32)
    return over / paths.shape[-1]  # the mean, counted in int32 (a bool mean adds in float64, slower)


def switchover_decisions(
    cluster_ids: list[str], fleets: list[ClusterFleet], active_plan: np.ndarray, exceed: np.ndarray,
    revert_capacity: np.ndarray, *, switch_threshold: float, warm_lead: int, mode: SwitchoverMode,
) -> list[tuple[SwitchoverDecision, ...]]:
    """Per cluster, the next switchover (if the probability of outgrowing the active set crosses the
    threshold) or a revert (if a smaller set would now do, with probability of being outgrown below
    the revert threshold, `revert_capacity` being that smaller set). Arrays are `[clusters, horizon]`
    and `[clusters]`; only the decisions themselves are built one by one."""
    now = np.array([f.active for f in fleets], dtype=np.int64)
    standby = np.array([f.standby for f in fleets], dtype=np.int64)
    rows = np.arange(len(fleets))
    crossing = exceed > switch_threshold
    first = crossing.argmax(axis=1)  # the first step over the threshold, 0 where none is
    # The largest active set planned from the crossing on: suffix maxima, read at the crossing.
    target = np.maximum.accumulate(active_plan[:, ::-1], axis=1)[:, ::-1][rows, first]
    moved = target if mode is SwitchoverMode.TIERED else target - now
    switch = crossing[rows, first] & (moved > 0)
    back_to_standby = ~switch & (standby > 0) & (revert_capacity <= standby)
    shrink = ~switch & (standby == 0) & (now > revert_capacity)

    decisions: list[tuple[SwitchoverDecision, ...]] = [()] * len(fleets)
    steps, moved_units, at_crossing = np.maximum(first - warm_lead, 0).tolist(), moved.tolist(), \
        exceed[rows, first].tolist()
    for c in np.flatnonzero(switch).tolist():
        decisions[c] = (SwitchoverDecision(cluster_ids[c], steps[c], mode, moved_units[c], at_crossing[c]),)
    peak, back = exceed.max(axis=1).tolist(), np.where(back_to_standby, standby, now - revert_capacity).tolist()
    for c in np.flatnonzero(back_to_standby | shrink).tolist():
        decisions[c] = (SwitchoverDecision(cluster_ids[c], 0, SwitchoverMode.REVERT, back[c], peak[c]),)
    return decisions


@dataclass(frozen=True)
class SortedPaths:
    """One block of clusters' paths in capacity units, steps-major (`[clusters, horizon, samples]`)
    and sorted over the paths: everything a plan reads off them, whatever the fleet and levels.

    `paths` is demand at each step, `point` its largest over the active lead (the same array when
    that lead is 0), `reach` its largest over the cold lead, `near` (`[clusters, samples]`) the
    largest over the warm lead, taken path by path before sorting.
    """

    paths: np.ndarray
    point: np.ndarray
    reach: np.ndarray
    near: np.ndarray


@dataclass(frozen=True)
class PathSummary:
    """The sorting work of a plan, done once per forecast and pool timing: a plan made from it reads
    quantiles and exceedances only, so re-planning the same forecast for another fleet is cheap.
    It holds about two to three times the forecast's sample paths."""

    forecast: Forecast
    scale: float  # capacity per unit
    leads: Leads
    warm_lead: int
    blocks: tuple[SortedPaths, ...]  # clusters in order, a few MiB of paths each (cache-sized passes)

    def fits(self, forecast: Forecast, spec: PoolSpec, costs: CostModel) -> bool:
        """Whether this is what `summarise_paths(forecast, spec, costs)` would make (the very forecast
        object: its arrays are not compared)."""
        return (self.forecast is forecast and self.scale == spec.capacity_per_unit
                and (self.leads, self.warm_lead) == pool_timing(forecast, spec, costs))


def sorted_block(samples: np.ndarray, scale: float, leads: Leads, warm_lead: int) -> SortedPaths:
    paths = steps_major(samples, scale)
    near = paths[:, : warm_lead + 1].max(axis=1)  # path by path, before the sorts below reorder paths
    near.sort(axis=-1)
    unwindowed = np.sort(paths, axis=-1) if leads.active else None  # `sorted_windows` sorts `paths` in place
    point, reach = sorted_windows(paths, leads.active, leads.pool)
    return SortedPaths(point if unwindowed is None else unwindowed, point, reach, near)


def sorted_blocks(forecast: Forecast, spec: PoolSpec, leads: Leads, warm_lead: int) -> Iterator[SortedPaths]:
    """`forecast`'s clusters in blocks of about 2 MiB of paths, each sorted as it is asked for.

    Clusters are independent until a shared pool adds them up: block by block, each block's passes
    (transpose, windows, sorts) run in cache, not through main memory, and a plan that drops each
    block once read reuses one block's buffers for the next.
    """
    samples = forecast.samples
    block = max(1, _BLOCK_BYTES // (samples.shape[1] * samples.shape[2] * samples.itemsize))
    for i in range(0, max(len(samples), 1), block):  # an empty forecast: one empty block
        yield sorted_block(samples[i:i + block], spec.capacity_per_unit, leads, warm_lead)


def pool_timing(forecast: Forecast, spec: PoolSpec, costs: CostModel) -> tuple[Leads, int]:
    """The active and pool leads (`timing_leads`) and the warm-activation lead, in forecast steps."""
    step_s = step_seconds(forecast.freq)
    return timing_leads(spec, step_s, costs), lead_steps(spec.warm_activation_s, step_s)


def summarise_paths(forecast: Forecast, spec: PoolSpec, costs: CostModel) -> PathSummary:
    """Sort `forecast`'s paths for `spec`'s timing (which `costs` weigh: see `timing_leads`), and keep them."""
    leads, warm_lead = pool_timing(forecast, spec, costs)
    blocks = tuple(sorted_blocks(forecast, spec, leads, warm_lead))
    return PathSummary(forecast, float(spec.capacity_per_unit), leads, warm_lead, blocks)


def path_figures(
    block: SortedPaths, current: np.ndarray, active_level: float, pool_level: float, revert_level: float,
    min_active: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What `plan` reads off one block of sorted paths: active and total units and the pool excess
    (`PoolSizing`), P(demand > `current` active units) per step, and the smallest active set the
    fleet may revert to (its chance of being outgrown before an activation lands is below
    1 - `revert_level`: going back to it is safe)."""
    exceed = exceed_probability(block.paths, current)
    revert_to = np.maximum(units(quantile_of_sorted(block.near, revert_level)), min_active)
    sizing = sizing_of_sorted(block.point, block.reach, active_level, pool_level, min_active)
    return sizing.active, sizing.total, sizing.pool_excess, exceed, revert_to


def plan(
    forecast: Forecast, fleet: FleetState, costs: CostModel, spec: PoolSpec, config: PolicyConfig = PolicyConfig(),
    *, min_active: int = 1, summary: PathSummary | None = None,
) -> Plan:
    """Desired active and shadow units per cluster and forecast step, switchovers and shadow placement.

    `summary`, when given, is `summarise_paths(forecast, spec, costs)` made earlier (a caller that
    plans one forecast many times keeps it); one made for another forecast or timing is refused.
    """
    if summary is not None and not summary.fits(forecast, spec, costs):
        raise ValueError("the path summary was made for another forecast, capacity per unit or pool timing")
    leads, warm_lead = pool_timing(forecast, spec, costs)
    cold_lead = leads.pool
    blocks = summary.blocks if summary is not None else sorted_blocks(forecast, spec, leads, warm_lead)
    derived = levels_from_costs(costs)
    active_level = config.active_level if config.active_level is not None else derived.active
    pool_level = config.pool_level if config.pool_level is not None else max(derived.pool, active_level)
    switch_threshold = config.switch_threshold if config.switch_threshold is not None else 1 - active_level
    revert_threshold = config.revert_threshold if config.revert_threshold is not None else switch_threshold / 2

    fleets = [fleet.of(c) for c in forecast.cluster_ids]
    current = np.array([f.active for f in fleets], dtype=float)
    figures, first = [], 0
    for block in blocks:
        count = len(block.near)
        figures.append(path_figures(block, current[first:first + count], active_level, pool_level,
                                    1 - revert_threshold, min_active))
        first += count
        del block  # before the next block is sorted: its buffers can take this one's memory
    active, total, pool_excess, exceed, revert_to = (np.concatenate(part) for part in zip(*figures, strict=True))
    sizing = PoolSizing(active, total, pool_excess)
    if config.region_resilient:
        total = np.maximum(region_resilient_total(total, len(spec.regions)), sizing.active)
    shadow = total - sizing.active

    decisions = switchover_decisions(forecast.cluster_ids, fleets, sizing.active, exceed, revert_to,
                                     switch_threshold=switch_threshold, warm_lead=warm_lead, mode=config.mode)
    # `tolist` gives Python ints and floats for a whole array at once, not one element at a time.
    clusters = {
        cluster: ClusterPlan(cluster, tuple(a), tuple(s), float(active_level), float(pool_level), tuple(p), d)
        for cluster, a, s, p, d in zip(forecast.cluster_ids, sizing.active.tolist(), shadow.tolist(),
                                       exceed.tolist(), decisions, strict=True)
    }

    shared: tuple[int, ...] = ()
    first_pool = int(shadow[:, 0].sum())
    if config.shared_pool:
        joint = shared_shadow_units(sizing, forecast.samples / spec.capacity_per_unit, pool_level, cold_lead)
        if config.region_resilient:
            active_sum = sizing.active.sum(axis=0)
            joint = np.minimum(region_resilient_total(active_sum + joint, len(spec.regions)) - active_sum,
                               shadow.sum(axis=0))
        shared = tuple(int(u) for u in joint)
        first_pool = shared[0]
    return Plan(clusters, shared, spread(first_pool, spec.regions))

"""What a replay is judged by: cost, unserved demand, the SPEC RG elasticity metrics, frontiers.

Elasticity metrics follow Herbst et al., "Quantifying Cloud Performance and Dependability:
Taxonomy, Metric Design, and Emerging Challenges" (ACM TOMPECS 3(4), 2018), SPEC Research Group
Cloud: with d_t the resource demand (units needed: ceil(demand / capacity per unit)) and s_t the
supply (units serving), over T steps of equal length,
    θU = 100/T Σ (d_t - s_t)+ / d_t     under-provisioning accuracy, % of demand missing on average
    θO = 100/T Σ (s_t - d_t)+ / d_t     over-provisioning accuracy
    τU = 100/T Σ [s_t < d_t]            under-provisioning timeshare, % of time
    τO = 100/T Σ [s_t > d_t]            over-provisioning timeshare
    υ  = 100/(T-1) Σ min(|sgn Δs_t - sgn Δd_t|, 1)   instability: % of steps where supply and
                                                      demand do not move in the same direction
A step with zero demand divides by one unit instead (the metric is undefined there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from allocator.policy import units

if TYPE_CHECKING:
    from allocator.oracle import OracleResult
    from pipelines.simulate_traces import Trace


@dataclass
class PolicyRun:
    """One policy over every setting of its knob: arrays `[steps, variants, clusters]`."""

    name: str
    knob: str
    labels: tuple[str, ...]
    knob_values: tuple[float, ...]
    operating_point: int  # the variant reported in the per-policy table
    capacity: np.ndarray
    shadow: np.ndarray  # warm + standby units
    unserved: np.ndarray  # capacity units
    cost: np.ndarray
    events: dict[str, np.ndarray] = field(default_factory=dict)  # [variants, clusters] counts


def elasticity(supply: np.ndarray, demand_units: np.ndarray) -> dict[str, np.ndarray]:
    """SPEC RG metrics per variant, averaged over clusters: `supply` `[T, V, C]`, demand `[T, C]`."""
    need = units(demand_units)[:, None, :].astype(float)
    divisor = np.maximum(need, 1.0)
    steps = supply.shape[0]
    metrics = {
        "theta_u": 100 * (np.maximum(need - supply, 0) / divisor).mean(axis=0),
        "theta_o": 100 * (np.maximum(supply - need, 0) / divisor).mean(axis=0),
        "tau_u": 100 * (supply < need - 1e-9).mean(axis=0),
        "tau_o": 100 * (supply > need + 1e-9).mean(axis=0),
    }
    if steps > 1:
        moved = np.abs(np.sign(np.diff(supply, axis=0)) - np.sign(np.diff(need, axis=0)))
        metrics["instability"] = 100 * np.minimum(moved, 1).mean(axis=0)
    else:
        metrics["instability"] = np.zeros(supply.shape[1:])
    return {k: v.mean(axis=-1) for k, v in metrics.items()}


def summarise(run: PolicyRun, demand_units: np.ndarray, step_s: float, oracle_cost: float,
              penalty: float) -> pd.DataFrame:
    """One row per variant: costs, unserved demand, elasticity, switchovers and shadow use."""
    minutes = step_s / 60
    hours = step_s / 3600
    cost = run.cost.sum(axis=(0, 2)).astype(float)
    unserved = run.unserved.sum(axis=(0, 2)).astype(float)
    total_demand = float(demand_units.sum())
    held = run.shadow > 0
    table = pd.DataFrame({
        "policy": run.name,
        "knob": run.knob,
        "setting": list(run.labels),
        "knob_value": list(run.knob_values),
        "operating_point": np.arange(len(run.labels)) == run.operating_point,
        "cost": cost,
        "cost_vs_oracle": cost / oracle_cost if oracle_cost > 0 else np.nan,
        "unserved_frac": unserved / total_demand if total_demand > 0 else 0.0,
        "unserved_minutes": (run.unserved > 1e-9).sum(axis=(0, 2)) * minutes,
        "penalty_cost": penalty * hours * unserved,
    })
    table["total_cost"] = table["cost"] + table["penalty_cost"]
    for name, values in elasticity(run.capacity, demand_units).items():
        table[name] = values
    activations = run.events.get("activations")
    for name in ("switchovers", "reverts", "activations"):
        counts = run.events.get(name)
        table[name] = counts.sum(axis=-1) if counts is not None else 0
    # Shadow use: of the steps that held warm units, the share on which some were activated.
    steps_holding = held.sum(axis=(0, 2))
    table["shadow_utilisation"] = np.where(
        steps_holding > 0, (activations.sum(axis=-1) if activations is not None else 0) / np.maximum(steps_holding, 1),
        0.0)
    # Shadow share: of all unit-steps held (serving or warm), the share held warm or on standby.
    shadow_steps = run.shadow.sum(axis=(0, 2)).astype(float)
    unit_steps = run.capacity.sum(axis=(0, 2)) + shadow_steps
    table["shadow_share"] = np.where(unit_steps > 0, shadow_steps / np.maximum(unit_steps, 1e-12), 0.0)
    return table


def pareto(points: pd.DataFrame) -> pd.DataFrame:
    """The settings no other setting of the same table beats on both cost and unserved demand."""
    ordered = points.sort_values(["unserved_frac", "cost"]).reset_index(drop=True)
    best = np.minimum.accumulate(ordered["cost"].to_numpy())
    keep = np.r_[True, ordered["cost"].to_numpy()[1:] < best[:-1]]
    return ordered[keep].reset_index(drop=True)


def cheapest_at(points: pd.DataFrame, unserved_frac: float, tolerance: float = 1e-12) -> float:
    """Lowest cost among settings leaving at most `unserved_frac` unserved (inf if none does)."""
    ok = points["unserved_frac"] <= unserved_frac + tolerance
    return float(points.loc[ok, "cost"].min()) if ok.any() else float("inf")


@dataclass(frozen=True)
class Dominance:
    dominates: bool  # every comparable point of the other frontier costs at least as much
    compared: int  # points of the other frontier inside this one's unserved range
    uncovered: int  # points of the other frontier leaving less unserved than any of ours
    worst_ratio: float  # max over compared points of our cost / theirs (<= 1 when dominating)


def frontier_dominance(ours: pd.DataFrame, theirs: pd.DataFrame, cost_tolerance: float = 1e-9) -> Dominance:
    """Does our frontier lie at or below theirs wherever both exist?

    Our frontier is a step function: at an unserved level u it is the cheapest of our settings
    leaving at most u unserved (no interpolation between settings, which would flatter it).
    Their points below our lowest unserved level are counted as uncovered, not compared.
    """
    lowest = float(ours["unserved_frac"].min())
    ratios, uncovered = [], 0
    for row in pareto(theirs).itertuples():
        if row.unserved_frac < lowest - 1e-12:
            uncovered += 1
            continue
        ratios.append(cheapest_at(ours, row.unserved_frac) / row.cost if row.cost > 0 else np.inf)
    worst = max(ratios) if ratios else float("nan")
    return Dominance(bool(ratios) and worst <= 1 + cost_tolerance, len(ratios), uncovered, worst)


@dataclass
class SimulationResult:
    """A whole replay: the tables, every policy's run, the oracle and where the report went."""

    name: str
    table: pd.DataFrame  # one row per policy at its operating point, plus the oracle
    points: pd.DataFrame  # every setting of every policy (the frontiers)
    headline: dict
    runs: list[PolicyRun]
    oracle: OracleResult
    trace: Trace
    timings: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)
    mlflow_run_id: str | None = None

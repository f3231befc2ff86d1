"""The simulation report: a Markdown summary and two figures (matplotlib, Agg backend).

- `capacity.png`: demand against each policy's serving capacity (operating point) over the whole
  replay and zoomed on the busiest stretch;
- `frontier.png`: infrastructure cost (÷ the oracle's) against unserved demand for every setting of
  every policy, each policy's Pareto frontier joined up, operating points ringed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipelines.plots import pyplot, save_png
from pipelines.simulate_metrics import PolicyRun, SimulationResult, pareto

if TYPE_CHECKING:
    from allocator.oracle import OracleResult
    from pipelines.simulate_config import SimulateConfig
    from pipelines.simulate_traces import Trace

COLOURS = {"static": "tab:gray", "reactive": "tab:orange", "reactive+warmpool": "tab:brown",
           "predictive-point": "tab:blue", "shadowcast": "tab:green", "shadowcast-tiered": "tab:olive",
           "oracle": "black"}
MAX_POINTS = 4000  # per curve in the full-run panel (peaks kept: each bin shows its maximum)


def _binned_max(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    if len(values) <= bins:
        return np.arange(len(values)), values
    edges = np.linspace(0, len(values), bins + 1).astype(int)
    return edges[:-1], np.maximum.reduceat(values, edges[:-1])


def capacity_plot(trace: Trace, runs: list[PolicyRun], best: OracleResult, path: str | Path, *,
                  cluster: str | None = None, zoom_steps: int = 720) -> Path:
    plt = pyplot()
    c = trace.cluster_ids.index(cluster) if cluster else 0
    demand = trace.demand_units[:, c]
    peak = int(np.argmax(demand))
    lo = max(0, min(peak - zoom_steps // 2, len(demand) - zoom_steps))
    hi = min(len(demand), lo + zoom_steps)
    times = trace.timestamps
    fig, axes = plt.subplots(2, 1, figsize=(12, 8))
    for ax, (a, b), binned in ((axes[0], (0, len(demand)), True), (axes[1], (lo, hi), False)):
        def draw(values, **style):
            x, y = _binned_max(values[a:b], MAX_POINTS) if binned else (np.arange(b - a), values[a:b])
            ax.plot(times[a:b][x] if len(times) == len(demand) else x + a, y, **style)

        draw(demand, color="black", lw=1.2, label="demand (units)")
        for run in runs:
            draw(run.capacity[:, run.operating_point, c].astype(float), color=COLOURS.get(run.name), lw=0.9,
                 label=f"{run.name} ({run.labels[run.operating_point]})")
        draw(best.need[:, c].astype(float), color="black", lw=0.6, ls=":", label="oracle")
        if not binned:  # the warm shadows behind shadowcast's active set
            for run in runs:
                if run.name.startswith("shadowcast"):
                    held = run.capacity[:, run.operating_point, c] + run.shadow[:, run.operating_point, c]
                    draw(held.astype(float), color=COLOURS.get(run.name), lw=0.8, ls="--",
                         label=f"{run.name}: active + warm shadows")
        ax.set_ylabel("units serving")
    axes[0].set_title(f"{trace.name} · {trace.cluster_ids[c]}: demand vs capacity (full replay, per-bin maxima)")
    axes[1].set_title(f"zoom: {zoom_steps} steps around the peak")
    axes[0].legend(fontsize=7, ncol=2, loc="upper left")
    axes[1].legend(fontsize=7, ncol=2, loc="upper left")
    if len(times) == len(demand):
        import matplotlib.dates as mdates

        for ax in axes:
            locator = mdates.AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


def frontier_plot(points: pd.DataFrame, table: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Cost ÷ oracle against unserved demand; the y range follows the adaptive policies' frontiers
    (over-provisioned static settings far above are cut off, and said so)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    positive = points.loc[points["unserved_frac"] > 0, "unserved_frac"]
    floor = max(1e-8, 0.5 * positive.min()) if len(positive) else 1e-7
    adaptive = points[points["policy"] != "static"]
    fronts = [pareto(g)["cost_vs_oracle"].max() for _, g in adaptive.groupby("policy")] or [points["cost_vs_oracle"].max()]
    top = min(max(fronts) * 1.05, 4.0)
    for name, group in points.groupby("policy", sort=False):
        colour = COLOURS.get(name)
        ax.scatter(np.maximum(group["unserved_frac"], floor), group["cost_vs_oracle"], s=14, color=colour, alpha=0.45)
        front = pareto(group)
        ax.plot(np.maximum(front["unserved_frac"], floor), front["cost_vs_oracle"], color=colour, lw=1.6,
                marker="o", ms=3, label=name)
    for row in table.itertuples():
        if row.policy != "oracle":
            ax.scatter(max(row.unserved_frac, floor), row.cost_vs_oracle, s=110, facecolors="none",
                       edgecolors=COLOURS.get(row.policy, "black"), linewidths=1.8)
    ax.axhline(1.0, color="black", ls=":", lw=1, label="oracle (lower bound)")
    ax.set_xscale("log")
    ax.set_ylim(0.95, top)
    hidden = int((points["cost_vs_oracle"] > top).sum())
    ax.set_xlabel(f"fraction of demand unserved (log; 0 drawn at {floor:.0e})")
    ax.set_ylabel("infrastructure cost ÷ oracle cost")
    note = f" · {hidden} settings above {top:.2f}× not shown" if hidden else ""
    ax.set_title(f"cost vs unserved demand, each policy over its knob{(' · ' + title) if title else ''}{note}",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


TABLE_COLUMNS = ["policy", "setting", "cost", "cost_vs_oracle", "unserved_frac", "unserved_minutes", "theta_u",
                 "theta_o", "tau_u", "tau_o", "instability", "switchovers", "reverts", "shadow_utilisation"]


def markdown_table(table: pd.DataFrame, columns: list[str] = TABLE_COLUMNS) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(getattr(row, c)) for c in columns) + " |" for row in table.itertuples()]
    return "\n".join(lines)


def write_report(result: SimulationResult, config: SimulateConfig, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "capacity": capacity_plot(result.trace, result.runs, result.oracle, out_dir / "capacity.png",
                                  cluster=config.report.cluster, zoom_steps=config.report.zoom_steps),
        "frontier": frontier_plot(result.points, result.table, out_dir / "frontier.png", title=result.name),
    }
    result.points.to_csv(out_dir / "points.csv", index=False)
    result.table.to_csv(out_dir / "table.csv", index=False)
    (out_dir / "headline.json").write_text(json.dumps(result.headline, indent=2, default=str))
    trace = result.trace
    text = [
        f"# Simulation: {result.name}",
        "",
        f"{trace.steps} steps of {trace.panel.freq} × {len(trace.cluster_ids)} cluster(s), from "
        f"{trace.timestamps[0]} to {trace.timestamps[-1]}; one unit = each cluster's peak / {config.trace.peak_units:g} "
        f"(unless set); cold provision {config.pool.cold_provision_s:g} s, warm activation "
        f"{config.pool.warm_activation_s:g} s; forecaster `{config.forecaster.name}` every "
        f"{config.forecaster.cadence_steps} steps, horizon {config.forecaster.horizon}, "
        f"{config.forecaster.num_samples} paths.",
        "",
        "Costs: active unit-hour "
        f"{config.costs.active_unit_cost:g}, warm {config.costs.warm_fraction:g}× that, penalty "
        f"{config.costs.unserved_penalty:g} per unit-hour short (shadowcast's operating point).",
        "",
        "## Policies at their operating points",
        "",
        markdown_table(result.table),
        "",
        "cost: infrastructure only; unserved_frac: share of demand not served; θ/τ/instability: SPEC RG "
        "elasticity metrics (%).",
        "",
        "## Headline",
        "",
        "```json",
        json.dumps(result.headline, indent=2, default=str),
        "```",
        "",
        f"![demand vs capacity]({figures['capacity'].name})",
        "",
        f"![cost vs unserved frontier]({figures['frontier'].name})",
        "",
        "Every setting of every policy is in `points.csv`.",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(text) + "\n")
    result.report, result.figures = path, figures
    return path

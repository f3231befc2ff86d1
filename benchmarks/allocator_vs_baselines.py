"""Every policy against the same real traces: shadowcast vs reactive, warm pools, predictive scaling.

    .venv/bin/python benchmarks/allocator_vs_baselines.py            # WorldCup98 + M4 hourly
    .venv/bin/python benchmarks/allocator_vs_baselines.py --all      # + Alibaba 2018, Google 2019

Each trace runs its `configs/simulate-<trace>.yaml` (the report, figures and tables go to
`runs/benchmark/<trace>/`, the run to MLflow). The last line printed is one JSON object: per trace
the per-policy cost, cost ÷ oracle and unserved fraction at each policy's operating point, and the
comparisons; at top level the WorldCup98 figures and whether its floors are met:
- shadowcast leaves >= 90 % less demand unserved than reactive (HPA, target 0.7) at <= 1.1x its cost
  (the shadowcast setting with least unserved demand among those within that cost);
- its cost-vs-unserved frontier lies at or below predictive-point's and reactive+warmpool's wherever
  both exist (baseline settings leaving less unserved than any shadowcast setting are counted, not compared);
- at <= 0.1 % unserved its cost is <= 1.3x the oracle's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT = ("worldcup98", "m4-hourly")
EVERYTHING = DEFAULT + ("alibaba2018", "google2019")


def floors(headline: dict) -> dict:
    best = headline.get("best_within_cost_of_reactive") or {}
    reduction = best.get("unserved_reduction_vs_reactive")
    near_zero = headline.get("cost_vs_oracle_at_0.1pct_unserved")
    return {
        "unserved_reduction_ge_90pct_within_1.1x_reactive_cost": bool(reduction is not None and reduction >= 0.9),
        "frontier_dominates_predictive_point": bool(headline.get("frontier_dominates_predictive_point")),
        "frontier_dominates_reactive_warmpool": bool(headline.get("frontier_dominates_reactive_warmpool")),
        "cost_le_1.3x_oracle_at_0.1pct_unserved": bool(near_zero is not None and near_zero <= 1.3),
    }


def run(trace: str, out_root: Path, data_dir: str | None, mlflow: bool) -> dict:
    from pipelines.settings import load_config
    from pipelines.simulate import run_simulation
    from pipelines.simulate_config import SimulateConfig

    overrides: dict = {"output_dir": str(out_root / trace), "log_mlflow": mlflow}
    if data_dir:
        overrides["trace"] = {"data_dir": data_dir}
    config = load_config(ROOT / "configs" / f"simulate-{trace}.yaml", SimulateConfig, overrides)
    started = time.perf_counter()
    result = run_simulation(config)
    seconds = time.perf_counter() - started
    columns = ["policy", "setting", "cost", "cost_vs_oracle", "unserved_frac", "unserved_minutes", "switchovers",
               "reverts"]
    print(f"\n== {trace}: {result.trace.steps} steps × {len(result.trace.cluster_ids)} clusters, "
          f"{seconds:.0f} s (forecasts {result.timings.get('forecast_s', 0):.0f} s)")
    print(result.table[columns].to_string(index=False))
    print(f"report: {result.report}")
    return {**result.headline, "seconds": round(seconds, 1), "steps": result.trace.steps,
            "clusters": len(result.trace.cluster_ids), "step": result.trace.panel.freq,
            "forecaster": config.forecaster.name, "cadence_steps": config.forecaster.cadence_steps,
            "report": str(result.report)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also the Alibaba 2018 and Google 2019 traces")
    parser.add_argument("--traces", nargs="*", help="run only these traces (config names)")
    parser.add_argument("--data-dir", default=None, help="folder of the public datasets")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmark")
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args()
    traces = args.traces or (EVERYTHING if args.all else DEFAULT)
    started = time.perf_counter()
    results = {trace: run(trace, args.out, args.data_dir, not args.no_mlflow) for trace in traces}
    summary: dict = {"traces": results, "seconds": round(time.perf_counter() - started, 1)}
    if "worldcup98" in results:
        wc = results["worldcup98"]
        summary.update({key: wc.get(key) for key in (
            "policies", "unserved_reduction_vs_reactive", "cost_ratio_vs_reactive", "best_within_cost_of_reactive",
            "frontier_dominates_predictive_point", "frontier_dominates_reactive_warmpool",
            "cost_vs_oracle_at_0.1pct_unserved")})
        summary["floors_worldcup98"] = floors(wc)
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()

"""In-process speed of `allocator.policy.plan` and of the plan route's JSON body, no server.

    .venv/bin/python benchmarks/plan_speed.py [--repeats 30] [--against REV]

Plans 1,000 and 100 clusters × `serve_latency.SAMPLES` paths × 48 hourly steps with the serving
benchmark's pool (50 demand units per unit, 2 h boot, 5 s activation) and default prices. With
`--against REV` the policy and `pipelines/api/planning.py` of that git revision are loaded from
`git show` into temporary modules and timed in the same rounds, interleaved (the machine is shared
and noisy, so only side-by-side figures compare), and their plans and bodies are checked equal.
Prints one JSON line: `plan_ms_p50` / `plan_ms_p99` (median and 99th percentile over repeats) and
`body_ms_p50` (serialising the plan as `POST /v1/plan` answers it), and `replan_ms_p50` / `_p99`: the
same plan from paths sorted beforehand (`policy.summarise_paths`, as the server keeps them between
plans of one forecast), per cluster count.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from allocator.types import ClusterFleet, CostModel, FleetState, PolicyConfig, PoolSpec  # noqa: E402
from benchmarks.serve_latency import HORIZON, PLAN_CLUSTERS, SAMPLES  # noqa: E402
from forecasting.forecast import Forecast  # noqa: E402

SPEC = PoolSpec(capacity_per_unit=50, cold_provision_s=7200, warm_activation_s=5)  # serve_latency's plan.pool


def forecast_of(clusters: int, seed: int = 0) -> tuple[Forecast, FleetState]:
    """Daily-seasonal lognormal demand paths (a few units per cluster, occasional spikes) and a fleet
    that holds about what each cluster needs, so switchovers and reverts both occur."""
    rng = np.random.default_rng(seed)
    level = rng.lognormal(5.0, 0.8, size=(clusters, 1, 1))
    daily = 1 + 0.4 * np.sin(2 * np.pi * np.arange(HORIZON) / 24 + rng.uniform(0, 2 * np.pi, (clusters, 1, 1)))
    samples = level * daily * rng.lognormal(0.0, 0.35, size=(clusters, SAMPLES, HORIZON))
    ids = [f"cluster-{c:04d}" for c in range(clusters)]
    fleet = FleetState({c: ClusterFleet(active=int(a), standby=int(s)) for c, a, s in
                        zip(ids, rng.integers(0, 12, clusters), rng.integers(0, 2, clusters), strict=True)})
    return Forecast.aligned(ids, pd.Timestamp("2025-03-01"), "h", samples), fleet


def load_from_git(rev: str, path: str, name: str) -> ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    file = Path(tempfile.mkdtemp(prefix="plan-speed-")) / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the module runs
    spec.loader.exec_module(module)
    return module


def elapsed_ms(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def figures(times: list[float]) -> dict[str, float]:
    return {"ms_p50": round(float(np.median(times)), 2), "ms_p99": round(float(np.percentile(times, 99)), 2)}


def same_body(a: bytes, b: bytes) -> bool:
    """Bodies equal but for the id and time each plan is stamped with."""
    ignore = ("plan_id", "created_at")
    da, db = ({k: v for k, v in json.loads(body).items() if k not in ignore} for body in (a, b))
    return da == db


def measure(clusters: int, repeats: int, implementations: dict[str, tuple[ModuleType, ModuleType]]) -> dict:
    policy_now = implementations["current"][0]
    forecast, fleet = forecast_of(clusters)
    args = (forecast, fleet, CostModel(), SPEC, PolicyConfig())
    times: dict[str, dict[str, list[float]]] = {name: {"plan": [], "body": []} for name in implementations}
    plans, bodies = {}, {}
    for name, (policy, planning) in implementations.items():  # warm-up, and the outputs compared below
        plans[name] = policy.plan(*args, min_active=1)
        bodies[name] = planning.plan_body("id", 0.0, forecast, plans[name])
    kept = policy_now.summarise_paths(forecast, SPEC, CostModel())  # what the server keeps between plans
    replan: list[float] = []
    for _ in range(repeats):
        replan.append(elapsed_ms(lambda: policy_now.plan(*args, min_active=1, summary=kept)))
        for name, (policy, planning) in implementations.items():
            times[name]["plan"].append(elapsed_ms(lambda policy=policy: policy.plan(*args, min_active=1)))
            result = plans[name]
            times[name]["body"].append(elapsed_ms(lambda p=planning, r=result: p.plan_body("id", 0.0, forecast, r)))
    out: dict = {"clusters": clusters, "samples": SAMPLES, "horizon": HORIZON}
    out |= {f"replan_{k}": v for k, v in figures(replan).items()}
    for name, t in times.items():
        prefix = "" if name == "current" else f"{name}_"
        plan_figures, body_figures = figures(t["plan"]), figures(t["body"])
        out |= {f"{prefix}plan_ms_p50": plan_figures["ms_p50"], f"{prefix}plan_ms_p99": plan_figures["ms_p99"],
                f"{prefix}body_ms_p50": body_figures["ms_p50"]}
    if "baseline" in plans:
        out["same_plan"] = plans["baseline"] == plans["current"]
        out["same_body"] = same_body(bodies["baseline"], bodies["current"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="Timed plans per implementation and size.")
    parser.add_argument("--against", metavar="REV", help="Also time (and compare with) this git revision.")
    args = parser.parse_args()

    from allocator import policy
    from pipelines.api import planning

    implementations = {"current": (policy, planning)}
    if args.against:
        implementations["baseline"] = (load_from_git(args.against, "allocator/policy.py", "baseline_policy"),
                                       load_from_git(args.against, "pipelines/api/planning.py", "baseline_planning"))
    result = measure(PLAN_CLUSTERS, args.repeats, implementations)
    result["small"] = measure(PLAN_CLUSTERS // 10, args.repeats, implementations)
    if args.against:
        result["baseline_rev"] = args.against
    result |= {"load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

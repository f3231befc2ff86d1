"""Trace replay: every policy against the same demand, step by step, with forecasts from the past only.

The replay loops over time; each policy is vectorised over the settings of its knob and over
clusters (`allocator.fleetsim`). Forecasts are issued every `cadence_steps` from a panel cut at
the current step (`ForecastFeed.visible`: no demand at or after it is ever shown), and the
forecaster is refitted on a schedule. The oracle's cost (perfect foresight) is the yardstick.

Entry points: `run_simulation(config)` (the `shadowcast simulate` job) and `replay_holdout(...)`
(the demo: policies over a held-out window after forecasting).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from allocator.autoscalers import Controller, ForecastWindow, Hpa, HpaSettings, Observation, PredictivePoint, Static
from allocator.calibration import CalibrationSettings
from allocator.fleetsim import Delay, Fleet, Scenario
from allocator.oracle import OracleResult, oracle
from allocator.policy import levels_from_costs, lead_steps, shared_shadow_units, size_pools, timing_leads
from allocator.shadowing import Shadowcast
from allocator.types import CostModel, PoolSpec, SwitchoverMode
from forecasting.data import DEMAND, ID, TIME, Panel, validate_panel
from forecasting.forecast import Forecast, Forecaster
from pipelines.simulate_config import PoliciesConfig, SimulateConfig
from pipelines.simulate_forecasters import make_forecaster
from pipelines.simulate_metrics import PolicyRun, SimulationResult, frontier_dominance, summarise
from pipelines.simulate_traces import Trace, build_trace, load_trace_panel

ORACLE = "oracle"


# --- forecasts during a replay ------------------------------------------------------------------


class ForecastFeed:
    """Forecasts issued during a replay, each from the data visible at its step only.

    At replay step t the forecaster sees, per cluster, the observed rows before that cluster's
    step t (at most `context_steps` of them); when the panel has known-future covariates, the
    next `horizon` rows follow as future rows with demand (and past-only covariates) emptied.
    """

    def __init__(self, trace: Trace, forecaster: Forecaster, horizon: int, num_samples: int,
                 windows: Sequence[int] = (0,), context_steps: int | None = None, refit_every: int | None = None,
                 fit_first: bool = True) -> None:
        self.trace, self.forecaster = trace, forecaster
        self.horizon, self.num_samples, self.windows = horizon, num_samples, tuple(windows)
        self.context_steps, self.refit_every = context_steps, refit_every
        self._frame = trace.panel.frame
        sizes = self._frame.groupby(ID, sort=False).size().to_numpy()
        self._offsets = np.r_[0, np.cumsum(sizes)[:-1]]
        self._sizes = sizes
        self._last_fit: int | None = None if fit_first else 0
        self.calls = 0
        self.seconds = 0.0

    def visible(self, t: int) -> Panel:
        ends = self.trace.start + t
        lows = ends - self.context_steps if self.context_steps else np.zeros_like(ends)
        lows = np.maximum(lows, 0)
        panel = self.trace.panel
        if panel.known_covariates:
            return panel.replace_frame(self._with_future_rows(lows, ends))
        if len(ends) == 1:  # one cluster: a slice, no copy (a forecast every step makes this hot)
            return panel.replace_frame(self._frame.iloc[self._offsets[0] + lows[0]: self._offsets[0] + ends[0]])
        rows = np.concatenate([np.arange(o + lo, o + hi) for o, lo, hi in zip(self._offsets, lows, ends, strict=True)])
        return panel.replace_frame(self._frame.take(rows).reset_index(drop=True))

    def _with_future_rows(self, lows: np.ndarray, ends: np.ndarray) -> pd.DataFrame:
        """History rows, then `horizon` future rows per cluster carrying only known-future covariates.

        Past the end of the data, known-future covariates repeat their last value (only forecast
        steps after the replay's last step can see these)."""
        panel, parts = self.trace.panel, []
        for o, lo, end, size in zip(self._offsets, lows, ends, self._sizes, strict=True):
            part = self._frame.iloc[o + lo: o + min(end + self.horizon, size)].copy()
            part.loc[part.index[end - lo:], [DEMAND, *panel.past_covariates]] = np.nan
            missing = end + self.horizon - size
            if missing > 0:
                pad = part.iloc[[-1] * missing].copy()
                pad[TIME] = part[TIME].iloc[-1] + panel.step * np.arange(1, missing + 1)
                pad[[DEMAND, *panel.past_covariates]] = np.nan
                part = pd.concat([part, pad])
            parts.append(part)
        return pd.concat(parts, ignore_index=True)

    def __call__(self, t: int) -> ForecastWindow:
        started = time.perf_counter()
        panel = self.visible(t)
        if self._last_fit is None or (self.refit_every and t - self._last_fit >= self.refit_every):
            self.forecaster.fit(panel)
            self._last_fit = t
        forecast = self.forecaster.predict(panel, self.horizon, self.num_samples)
        self.calls += 1
        self.seconds += time.perf_counter() - started
        return ForecastWindow.build(t, self._units(forecast, panel), self.windows)

    def _units(self, forecast: Forecast, panel: Panel) -> np.ndarray:
        if forecast.cluster_ids != self.trace.cluster_ids:
            forecast = forecast.select(self.trace.cluster_ids)
        expected = pd.DatetimeIndex(panel.last_observed().reindex(self.trace.cluster_ids).to_numpy()) + panel.step
        if not forecast.starts.equals(expected) or forecast.horizon < self.horizon:
            raise ValueError(f"the forecaster returned a forecast starting at {list(forecast.starts[:3])} with horizon "
                             f"{forecast.horizon}; expected {list(expected[:3])} and at least {self.horizon}")
        return forecast.samples[:, :, : self.horizon] / self.trace.capacity_per_unit[:, None, None]


# --- the replay ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySetup:
    controller: Controller
    labels: tuple[str, ...]
    operating_point: int

    @property
    def needs_forecast(self) -> bool:
        return isinstance(self.controller, (PredictivePoint, Shadowcast))


def lead_windows(setups: list[PolicySetup]) -> list[int]:
    """Window lengths (steps) whose sample maxima the controllers look up in a forecast."""
    return sorted({0, *(w for s in setups if isinstance(s.controller, Shadowcast) for w in s.controller.windows)})


def replay(
    demand_units: np.ndarray, initial_demand: np.ndarray, setups: list[PolicySetup],
    forecasts: Callable[[int], ForecastWindow] | None, *, cadence: int, spec: PoolSpec, costs: CostModel,
    scenario: Scenario, step_s: float,
) -> list[PolicyRun]:
    """Replay `demand_units` (`[steps, clusters]`, capacity units) through every policy."""
    steps, clusters = demand_units.shape
    cold, warm = Delay.of(spec.cold_provision_s, step_s), Delay.of(spec.warm_activation_s, step_s)
    fleets, records = [], []
    window = forecasts(0) if forecasts is not None else None
    for setup in setups:
        shape = (len(setup.labels), clusters)
        fleet = Fleet(shape, cold, warm, costs, step_s, scenario, setup.controller.scale_in_to_warm)
        fleet.start(*setup.controller.initial(initial_demand, window))
        fleets.append(fleet)
        records.append({k: np.zeros((steps, *shape), dtype=np.float32) for k in ("capacity", "shadow", "unserved", "cost")})
    last = np.asarray(initial_demand, dtype=float)
    for t in range(steps):
        if forecasts is not None and t > 0 and t % cadence == 0:
            window = forecasts(t)
        obs = Observation(t, last, window)
        demand = demand_units[t]
        for setup, fleet, record in zip(setups, fleets, records, strict=True):
            fleet.disrupt(t)
            fleet.apply(t, setup.controller.decide(obs, fleet))
            outcome = fleet.serve(t, demand)
            setup.controller.observe(t, demand)
            record["capacity"][t] = outcome.capacity
            record["shadow"][t] = fleet.warm + fleet.standby
            record["unserved"][t] = outcome.unserved
            record["cost"][t] = outcome.cost
        last = demand
    runs = []
    for setup, fleet, record in zip(setups, fleets, records, strict=True):
        c = setup.controller
        events = {"activations": fleet.activations, "deactivations": fleet.deactivations, **c.events()}
        runs.append(PolicyRun(c.name, c.knob, setup.labels, c.knob_values, setup.operating_point,
                              record["capacity"], record["shadow"], record["unserved"], record["cost"], events))
    return runs


def _with_point(sweep: list[float], point: float) -> tuple[list[float], int]:
    values = sorted(set(float(v) for v in sweep) | {float(point)})
    return values, values.index(float(point))


def build_setups(policies: PoliciesConfig, clusters: int, step_s: float, spec: PoolSpec, costs: CostModel,
                 training_peak_units: np.ndarray) -> list[PolicySetup]:
    """Controllers for every enabled policy, each over the sweep of its knob."""
    setups = []
    cold_lead = lead_steps(spec.cold_provision_s, step_s)
    if policies.static.enabled:
        values, point = _with_point(policies.static.sweep, policies.static.headroom)
        setups.append(PolicySetup(Static(training_peak_units, tuple(values)),
                                  tuple(f"headroom={v:g}" for v in values), point))
    r = policies.reactive
    if r.enabled:
        values, point = _with_point(r.sweep, r.target_utilisation)
        settings = HpaSettings(r.sync_period_s, r.stabilisation_s, r.tolerance, metric=r.metric)
        setups.append(PolicySetup(Hpa(clusters, step_s, tuple(values), settings=settings),
                                  tuple(f"target={v:g}" for v in values), point))
    w = policies.reactive_warmpool
    if w.enabled:
        targets, _ = _with_point(w.sweep, w.target_utilisation)
        pools, _ = _with_point([float(p) for p in w.pool_sweep], float(w.warm_pool))
        grid = [(u, int(p)) for u in targets for p in pools]
        settings = HpaSettings(w.sync_period_s, w.stabilisation_s, w.tolerance, metric=w.metric)
        setups.append(PolicySetup(
            Hpa(clusters, step_s, tuple(u for u, _ in grid), tuple(p for _, p in grid), settings),
            tuple(f"target={u:g},pool={p}" for u, p in grid), grid.index((w.target_utilisation, w.warm_pool))))
    p = policies.predictive_point
    if p.enabled:
        values, point = _with_point(p.sweep, p.target_utilisation)
        settings = HpaSettings(p.sync_period_s, p.stabilisation_s, p.tolerance, metric=p.metric)
        pool = tuple(p.warm_pool for _ in values) if p.warm_pool else None
        setups.append(PolicySetup(PredictivePoint(clusters, step_s, tuple(values), cold_lead, pool, settings),
                                  tuple(f"target={v:g}" for v in values), point))
    s = policies.shadowcast
    if s.enabled:
        values, point = _with_point(s.penalty_sweep, costs.unserved_penalty)
        calibration = CalibrationSettings(**s.calibration.model_dump()) if s.calibration else None
        modes = [SwitchoverMode(s.mode)] + ([SwitchoverMode.TIERED] if s.also_tiered and s.mode != "tiered" else [])
        for mode in modes:
            name = "shadowcast" if mode == SwitchoverMode(s.mode) else "shadowcast-tiered"
            setups.append(PolicySetup(
                Shadowcast(clusters, costs, tuple(values), spec, step_s, calibration=calibration, mode=mode, guard=s.guard, regions=len(spec.regions),
                           region_resilient=s.region_resilient, revert_risk=s.revert_risk, name=name),
                tuple(f"penalty={v:g}" for v in values), point))
    return setups


# --- results ------------------------------------------------------------------------------------


def tabulate(runs: list[PolicyRun], demand_units: np.ndarray, best: OracleResult, step_s: float,
             penalty: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    oracle_cost = float(best.cost.sum())
    points = pd.concat([summarise(r, demand_units, step_s, oracle_cost, penalty) for r in runs], ignore_index=True)
    oracle_run = PolicyRun(ORACLE, "-", ("perfect foresight",), (0.0,), 0, best.need[:, None, :].astype(float),
                           np.zeros((*best.need.shape[:1], 1, best.need.shape[1])),
                           np.zeros((*best.need.shape[:1], 1, best.need.shape[1])),
                           np.zeros((*best.need.shape[:1], 1, best.need.shape[1])))
    oracle_row = summarise(oracle_run, demand_units, step_s, oracle_cost, penalty)
    oracle_row["cost"] = oracle_cost
    oracle_row["cost_vs_oracle"] = 1.0
    oracle_row["total_cost"] = oracle_cost
    table = pd.concat([points[points["operating_point"]], oracle_row], ignore_index=True)
    return table.reset_index(drop=True), points


def headline(table: pd.DataFrame, points: pd.DataFrame, reactive_cost_slack: float = 1.1,
             near_zero: float = 0.001) -> dict:
    """The comparisons the benchmark reports, computed from the table and the frontiers."""
    out: dict = {"policies": {
        row.policy: {"setting": row.setting, "cost": round(float(row.cost), 4),
                     "cost_vs_oracle": round(float(row.cost_vs_oracle), 4),
                     "unserved_frac": float(row.unserved_frac)}
        for row in table.itertuples()}}
    by_policy = {name: group for name, group in points.groupby("policy", sort=False)}
    ops = table.set_index("policy")
    if "shadowcast" in ops.index and "reactive" in ops.index:
        s, r = ops.loc["shadowcast"], ops.loc["reactive"]
        out["unserved_reduction_vs_reactive"] = _reduction(s.unserved_frac, r.unserved_frac)
        out["cost_ratio_vs_reactive"] = float(s.cost / r.cost)
        # The shadowcast setting with least unserved demand within the cost slack of reactive.
        ours = by_policy["shadowcast"]
        affordable = ours[ours["cost"] <= reactive_cost_slack * r.cost]
        if len(affordable):
            best = affordable.sort_values(["unserved_frac", "cost"]).iloc[0]
            out["best_within_cost_of_reactive"] = {
                "setting": best.setting, "cost_ratio_vs_reactive": float(best.cost / r.cost),
                "unserved_reduction_vs_reactive": _reduction(best.unserved_frac, r.unserved_frac)}
    if "shadowcast" in by_policy:
        ours = by_policy["shadowcast"]
        for other in ("predictive-point", "reactive+warmpool", "reactive", "static"):
            if other in by_policy:
                d = frontier_dominance(ours, by_policy[other])
                key = other.replace("+", "_").replace("-", "_")
                out[f"frontier_dominates_{key}"] = d.dominates
                out[f"frontier_{key}_detail"] = {"compared": d.compared, "uncovered": d.uncovered,
                                                 "worst_cost_ratio": round(d.worst_ratio, 4)}
        low = ours[ours["unserved_frac"] <= near_zero]
        out["cost_vs_oracle_at_0.1pct_unserved"] = (float(low["cost_vs_oracle"].min()) if len(low) else None)
    return out


def _reduction(ours: float, theirs: float) -> float | None:
    return float(1 - ours / theirs) if theirs > 0 else None


# --- the job ------------------------------------------------------------------------------------


def pool_spec(config: SimulateConfig) -> PoolSpec:
    """The pool in capacity units: the trace's demand is divided by each cluster's unit size."""
    p = config.pool
    return PoolSpec(p.name, p.resource_type, 1.0, p.cold_provision_s, p.warm_activation_s, tuple(p.regions))


def run_simulation(config: SimulateConfig, *, forecaster: Forecaster | None = None, log_mlflow: bool | None = None,
                   write_report: bool = True) -> SimulationResult:
    """Load the trace, replay every policy, compare with the oracle, write the report, log to MLflow."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    name, panel = load_trace_panel(config.trace)
    trace = build_trace(name, panel, config.trace)
    timings["load_s"] = time.perf_counter() - started
    spec, costs = pool_spec(config), CostModel(**config.costs.model_dump())
    step_s = trace.step_s
    scenario = Scenario(config.scenario.failure_rate_per_hour, _outage_step(config, trace), len(spec.regions),
                        config.scenario.seed)
    setups = build_setups(config.policies, len(trace.cluster_ids), step_s, spec, costs,
                          trace.training_peak / trace.capacity_per_unit)
    if not setups:
        raise ValueError("policies: every policy is disabled; enable at least one")
    f = config.forecaster
    cold_lead = lead_steps(spec.cold_provision_s, step_s)
    windows = lead_windows(setups)
    if f.horizon < f.cadence_steps + max(cold_lead, *windows):
        raise ValueError(f"forecaster.horizon ({f.horizon}) must cover forecaster.cadence_steps ({f.cadence_steps}) "
                         f"plus the cold provisioning lead ({max(cold_lead, *windows)} steps)")
    feed = None
    if any(s.needs_forecast for s in setups):
        model = forecaster or make_forecaster(f.name, f.options)
        feed = ForecastFeed(trace, model, f.horizon, f.num_samples, windows, f.context_steps, f.refit_every_steps)
    pools = _PoolStats(costs, timing_leads(spec, step_s, costs).pool) if len(trace.cluster_ids) > 1 else None
    source = (lambda t: pools.track(feed(t))) if (feed and pools) else feed

    started = time.perf_counter()
    runs = replay(trace.demand_units, trace.last_history_units, setups, source, cadence=f.cadence_steps, spec=spec,
                  costs=costs, scenario=scenario, step_s=step_s)
    timings["replay_s"] = time.perf_counter() - started
    if feed is not None:
        timings["forecast_s"], timings["forecasts"] = feed.seconds, feed.calls
    best = oracle(trace.demand_units, costs, step_s, Delay.of(spec.cold_provision_s, step_s),
                  Delay.of(spec.warm_activation_s, step_s))
    table, points = tabulate(runs, trace.demand_units, best, step_s, costs.unserved_penalty)
    summary = headline(table, points)
    if pools is not None:
        summary["shared_pool"] = pools.summary()
    result = SimulationResult(name, table, points, summary, runs, best, trace, timings)
    if write_report:
        from pipelines.report_simulate import write_report as write

        write(result, config, config.output_dir)
    if log_mlflow if log_mlflow is not None else config.log_mlflow:
        result.mlflow_run_id = log_to_mlflow(result, config)
    return result


def _outage_step(config: SimulateConfig, trace: Trace) -> int | None:
    outage = config.scenario.outage
    if outage is None:
        return None
    if isinstance(outage.at, int):
        step = outage.at
    else:
        step = int(trace.timestamps.searchsorted(pd.Timestamp(outage.at)))
    if not 0 <= step < trace.steps:
        raise ValueError(f"scenario.outage.at: {outage.at} is outside the replayed window "
                         f"({trace.timestamps[0]} → {trace.timestamps[-1]}, {trace.steps} steps)")
    return step


class _PoolStats:
    """How much smaller one shared pool is than separate per-cluster pools, at each forecast."""

    def __init__(self, costs: CostModel, cold_lead: int) -> None:
        self.levels, self.cold_lead = levels_from_costs(costs), cold_lead
        self.separate: list[int] = []
        self.shared: list[int] = []

    def track(self, window: ForecastWindow) -> ForecastWindow:
        samples = np.moveaxis(window.window(0), -1, 1)  # back to [clusters, samples, horizon]
        sizing = size_pools(samples, self.levels.active, self.levels.pool, self.cold_lead)
        self.separate.append(int(sizing.shadow[:, 0].sum()))
        self.shared.append(int(shared_shadow_units(sizing, samples, self.levels.pool, self.cold_lead)[0]))
        return window

    def summary(self) -> dict:
        separate, shared = float(np.mean(self.separate)), float(np.mean(self.shared))
        return {"separate_pools_mean_units": round(separate, 2), "shared_pool_mean_units": round(shared, 2),
                "saving": round(1 - shared / separate, 4) if separate > 0 else 0.0}


def log_to_mlflow(result: SimulationResult, config: SimulateConfig) -> str:
    import mlflow

    from pipelines.tracking import git_commit, use_experiment

    use_experiment(config.mlflow.experiment, config.mlflow.tracking_uri)
    with mlflow.start_run(run_name=f"simulate-{result.name}") as run:
        mlflow.set_tags({"job": "simulate", "trace": result.name, "git_commit": git_commit()})
        mlflow.log_params({
            "trace": result.name, "steps": result.trace.steps, "clusters": len(result.trace.cluster_ids),
            "freq": result.trace.panel.freq, "forecaster": config.forecaster.name,
            "cadence_steps": config.forecaster.cadence_steps, "horizon": config.forecaster.horizon,
            "num_samples": config.forecaster.num_samples, "cold_provision_s": config.pool.cold_provision_s,
            "warm_activation_s": config.pool.warm_activation_s, "regions": ",".join(config.pool.regions),
            "active_unit_cost": config.costs.active_unit_cost, "warm_fraction": config.costs.warm_fraction,
            "unserved_penalty": config.costs.unserved_penalty,
            "failure_rate_per_hour": config.scenario.failure_rate_per_hour,
            "outage": str(config.scenario.outage.at) if config.scenario.outage else "none",
        })
        metrics = {}
        for row in result.table.itertuples():
            key = row.policy.replace("+", "_")
            for column in ("cost", "cost_vs_oracle", "unserved_frac", "unserved_minutes", "theta_u", "theta_o",
                           "tau_u", "tau_o", "instability", "switchovers", "reverts", "shadow_utilisation"):
                value = getattr(row, column)
                if value is not None and np.isfinite(value):
                    metrics[f"{key}.{column}"] = float(value)
        for key in ("unserved_reduction_vs_reactive", "cost_ratio_vs_reactive"):
            if result.headline.get(key) is not None:
                metrics[key] = float(result.headline[key])
        metrics.update({f"time.{k}": float(v) for k, v in result.timings.items()})
        mlflow.log_metrics(metrics)
        if result.report is not None:
            mlflow.log_artifacts(str(result.report.parent), artifact_path="report")
        return run.info.run_id


# --- the demo's entry point -----------------------------------------------------------------------


class HoldoutReplay(NamedTuple):
    table: pd.DataFrame  # policy, setting, cost, cost_vs_oracle, unserved_pct (+ the other metrics)
    frontier_png: Path


def replay_holdout(
    history: Panel, actuals: np.ndarray, forecast_or_forecaster: Forecast | Forecaster, *, out_dir: str | Path,
    costs: CostModel = CostModel(unserved_penalty=100.0), cold_provision_s: float = 300.0,
    warm_activation_s: float = 5.0, peak_units: float = 50.0, num_samples: int = 200, cadence_steps: int = 1,
    policies: PoliciesConfig | None = None,
) -> HoldoutReplay:
    """Replay every policy over a held-out window that follows `history`.

    `history` is the panel the forecaster was trained on (its last observation per cluster ends
    where the holdout starts; future rows, as `Panel.cut` leaves them, carry known covariates);
    `actuals` is `[clusters, holdout]` demand of the held-out steps, in `history.cluster_ids` order.
    With a `Forecast` (horizon >= holdout), that one forecast drives the whole replay; with a
    `Forecaster` (already fitted), a new forecast is issued every `cadence_steps` from the data
    revealed so far. Units: each cluster's peak is `peak_units`. Writes `frontier.png` and
    `capacity.png` under `out_dir`; returns the per-policy table and the frontier plot's path.
    """
    from pipelines.report_simulate import capacity_plot, frontier_plot

    actuals = np.asarray(actuals, dtype=float)
    holdout = actuals.shape[1]
    panel = _with_actuals(history, actuals)
    trace = build_trace("holdout", panel, _holdout_trace_config(holdout, peak_units))
    step_s = trace.step_s
    spec = PoolSpec(capacity_per_unit=1.0, cold_provision_s=cold_provision_s, warm_activation_s=warm_activation_s)
    setups = build_setups(policies or PoliciesConfig(), len(trace.cluster_ids), step_s, spec, costs,
                          trace.training_peak / trace.capacity_per_unit)
    windows = lead_windows(setups)
    if isinstance(forecast_or_forecaster, Forecast):
        forecast = forecast_or_forecaster.select(trace.cluster_ids)
        if forecast.horizon < holdout:
            raise ValueError(f"the forecast covers {forecast.horizon} steps; the holdout has {holdout}")
        window = ForecastWindow.build(0, forecast.samples / trace.capacity_per_unit[:, None, None], windows)
        source, cadence = (lambda t: window), holdout + 1
    else:
        feed = ForecastFeed(trace, forecast_or_forecaster, holdout, num_samples, windows, fit_first=False)
        source, cadence = feed, cadence_steps
    runs = replay(trace.demand_units, trace.last_history_units, setups, source, cadence=cadence, spec=spec,
                  costs=costs, scenario=Scenario(regions=1), step_s=step_s)
    best = oracle(trace.demand_units, costs, step_s, Delay.of(cold_provision_s, step_s),
                  Delay.of(warm_activation_s, step_s))
    table, points = tabulate(runs, trace.demand_units, best, step_s, costs.unserved_penalty)
    table["unserved_pct"] = 100 * table["unserved_frac"]
    out_dir = Path(out_dir)
    png = frontier_plot(points, table, out_dir / "frontier.png", title="held-out window")
    capacity_plot(trace, runs, best, out_dir / "capacity.png", zoom_steps=holdout)
    columns = ["policy", "setting", "cost", "cost_vs_oracle", "unserved_pct"]
    return HoldoutReplay(table[columns + [c for c in table.columns if c not in columns]], png)


def _with_actuals(history: Panel, actuals: np.ndarray) -> Panel:
    """`history` with its held-out demand filled in (the rows `Panel.cut` emptied, or new rows)."""
    frame = history.history()
    ends = history.last_observed()
    rows = []
    for c, cluster in enumerate(history.cluster_ids):
        stamps = pd.date_range(ends[cluster] + history.step, periods=actuals.shape[1], freq=history.freq)
        rows.append(pd.DataFrame({ID: cluster, "timestamp": stamps, DEMAND: actuals[c]}))
    future = pd.concat(rows, ignore_index=True)
    covariates = [c for c in history.frame.columns if c not in (ID, "timestamp", DEMAND)]
    if covariates:
        known = history.frame[history.frame[DEMAND].isna()][[ID, "timestamp", *covariates]]
        future = future.merge(known, on=[ID, "timestamp"], how="left")
    full = pd.concat([frame, future], ignore_index=True).sort_values([ID, "timestamp"], kind="stable")
    order = {c: i for i, c in enumerate(history.cluster_ids)}
    full = full.sort_values(ID, key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    return validate_panel(full, source=f"{history.source} + held-out actuals", freq=history.freq,
                          past_covariates=[c for c in history.past_covariates if c in full.columns and full[c].notna().all()],
                          known_covariates=[c for c in history.known_covariates if full[c].notna().all()],
                          allow_negative=history.allow_negative)


def _holdout_trace_config(holdout: int, peak_units: float):
    from pipelines.simulate_config import TraceConfig

    return TraceConfig(holdout_steps=holdout, peak_units=peak_units)

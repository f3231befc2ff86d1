"""The control loop behind `shadowcast run`. Every interval, one pass of

    (re)load the model if due → pull demand → forecast → plan → reconcile, one idempotent step at a time

A failing part degrades the pass instead of stopping the loop: a model that will not load leaves
the previous one in place (or, before any has loaded, the fallback forecaster); a demand source
that does not answer, or data the model cannot forecast, leaves the last good plan in force, its
steps advancing with the wall clock until its horizon runs out (then the fleet is held as it is).
Each condition raises an alert gauge (`pipelines.run_metrics.Alert`) and clears it on recovery.

The loop acts only through `Controller.reconcile`, which takes one step toward the plan per call
and records every switchover transition before acting on it; a pass takes steps until the fleet
matches the plan or `max_steps_per_interval` is reached, and checks for shutdown between steps,
so a stop request always lets the step in flight finish.

Process wiring (lock, API, signals) lives in `pipelines.run_process`; this module is the pass.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from allocator.types import FleetState, Plan, SwitchoverMode
from forecasting.data import Panel
from forecasting.forecast import Forecast
from pipelines.api.deps import Services
from pipelines.api.planning import CurrentPlan
from pipelines.api.runtime import Runtime
from pipelines.run_config import RunConfig
from pipelines.run_metrics import Alert, LoopMetrics
from pipelines.settings import DataConfig

if TYPE_CHECKING:
    from allocator.health import HealthMonitor

log = logging.getLogger("shadowcast.run")
RECENT_STEPS = 200  # reconcile steps kept for GET /v1/run
FIRST_LOAD_RETRY_S = 30.0  # while no model has loaded, try again at least this often


class DemandSource(Protocol):
    def pull(self) -> Panel: ...


class ConfiguredSource:
    """The job config's `data:` section, read again on every pull (a file may have grown; a
    Prometheus range query ends at the current time)."""

    def __init__(self, config: DataConfig) -> None:
        self.config = config

    def pull(self) -> Panel:
        from pipelines.sources import load_panel

        return load_panel(self.config)


class ReplaySource:
    """A static source revealed one step per pull, as if its last observations were arriving live.

    The first pull hides each series' last `steps + future` observations; each pull shows one
    more, down to `future` hidden ones (kept hidden so known-future covariates still cover a
    forecast horizon), then it starts over. Loaded once: a static source does not change."""

    def __init__(self, inner: DemandSource, steps: int, future: int = 0) -> None:
        self.inner, self.steps, self.future = inner, steps, future
        self._panel: Panel | None = None
        self._shown = 0

    def pull(self) -> Panel:
        if self._panel is None:
            self._panel = self.inner.pull()
        hidden = self.steps + self.future - self._shown
        self._shown = (self._shown + 1) % (self.steps + 1)
        return self._panel.cut(hidden) if hidden else self._panel


def source_for(config: RunConfig) -> DemandSource:
    source: DemandSource = ConfiguredSource(config.data)
    if config.replay is None:
        return source
    return ReplaySource(source, config.replay.steps, future=config.forecast.horizon)


@dataclass(frozen=True)
class StepRecord:
    at: float  # wall clock when the step returned (a provisioned shadow is warm and synced by then)
    action: str  # a ReconcileStep action, or "error"
    cluster_id: str
    subject: str  # resource or switchover id
    detail: str = ""
    outcome: str = ""  # switchovers: committed / rolled-back; errors: the exception type


@dataclass(frozen=True)
class ActivePlan:
    current: CurrentPlan  # what GET /v1/plan/current answers
    step_s: float  # seconds per forecast step
    horizon: int
    forecaster: str

    def step_at(self, now: float) -> int:
        """Forecast steps since the plan was made: where in its horizon the fleet is now."""
        return max(0, int((now - self.current.created_at) // self.step_s))


@dataclass(frozen=True)
class Iteration:
    number: int
    outcome: str  # ok, degraded, idle
    plan_id: str | None
    steps: tuple[StepRecord, ...]
    seconds: float


@dataclass
class LoopStatus:
    iteration: int = 0
    source_healthy: bool | None = None
    source_error: str = ""
    model_healthy: bool | None = None
    model_error: str = ""
    forecaster: str = ""
    forecast_error: str = ""
    plan_id: str | None = None
    plan_made_at: float | None = None
    plan_step: int | None = None
    last_iteration_at: float | None = None
    steps: deque[StepRecord] = field(default_factory=lambda: deque(maxlen=RECENT_STEPS))


def actionable(plan: Plan, fleet: FleetState) -> Plan:
    """The policy's plan, adapted to how the controller carries out tiered switchovers.

    0. A cluster with no active unit gets no switchover: the policy measures the chance of
       outgrowing the active capacity, which is certain at zero, but reconcile first opens the
       route on a fresh unit; whether to move off that unit is for the next plan to say.
    1. A cluster that already moved onto a shadow during this spike is not moved again. The policy
       sees the fleet's active count, which a tiered move does not change (one unit replaces
       another), so while demand stays high every new plan asks for the move again; acted on, the
       route would hop from shadow to shadow each interval. A former active on standby says the
       cluster has moved: its next move is the revert the policy asks for once the spike is over.
    2. A tiered move needs a warm unit to move onto, but the policy's shadow count is the capacity
       wanted *beyond* its active set (scale-out's reading). When that active set outgrows the
       fleet's, which a tiered move is how the fleet follows, the count can fall to 0 just before
       the move comes due, and reconcile would release the very unit the route was to move onto
       (or never warm one). So at least one shadow is kept at every step where the plan wants more
       active capacity than the fleet holds, and at every step until a planned tiered move is due.
    """
    clusters = {}
    for cluster_id, cluster in plan.clusters.items():
        decisions, held = cluster.switchovers, fleet.of(cluster_id)
        if held.active == 0:
            decisions = ()
        elif held.standby > 0:
            decisions = tuple(d for d in decisions if d.mode is not SwitchoverMode.TIERED)
        shadow = cluster.shadow_units
        if held.active and not held.standby:
            due = max((d.step for d in decisions if d.mode is SwitchoverMode.TIERED), default=-1)
            shadow = tuple(max(units, 1) if h <= due or cluster.active_units[h] > held.active else units
                           for h, units in enumerate(shadow))
        if decisions != cluster.switchovers or shadow != cluster.shadow_units:
            cluster = replace(cluster, switchovers=decisions, shadow_units=shadow)
        clusters[cluster_id] = cluster
    return replace(plan, clusters=clusters)


class ControlLoop:
    """Passes over one runtime, sharing the serving app's model holder, forecast cache and metrics
    (`services`): what the loop loads, forecasts and plans is what the API shows."""

    def __init__(self, config: RunConfig, runtime: Runtime, services: Services, source: DemandSource, *,
                 monitor: HealthMonitor | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config, self.runtime, self.services, self.source, self.clock = config, runtime, services, source, clock
        self.monitor = monitor  # running beside the loop in its own thread, if configured
        self._monitor_seen = 0
        self.metrics = LoopMetrics(services.metrics)
        self.status = LoopStatus()
        self.plan: ActivePlan | None = None
        self._lock = threading.Lock()  # status is read by the API's threads
        self._next_reload = -math.inf
        self.metrics.track_plan_age(lambda: self.plan.current.created_at if self.plan else None, clock)

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Iterate every `interval_s` until `stop` is set; the pass in flight finishes its step."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.iterate(stop)
            except Exception:  # a bug in a pass must not end the control loop; the next pass retries
                log.exception("control-loop iteration failed")
                self.metrics.iterations.labels("failed").inc()
            stop.wait(max(0.0, self.config.interval_s - (time.monotonic() - started)))

    def iterate(self, stop: threading.Event | None = None) -> Iteration:
        started = time.perf_counter()
        with self._lock:
            self.status.iteration += 1
            number = self.status.iteration
        self._refresh_model()
        fresh = self._fresh_plan()
        if fresh is not None:
            self.plan = fresh
            self.services.extras["plan"] = fresh.current  # GET /v1/plan/current answers what the loop acts on
        steps = self._reconcile(stop) if self.plan is not None else ()
        self._observe_health()
        self._observe_fleet()
        if self.plan is None:
            outcome = "idle"
        elif fresh is None or fresh.forecaster.startswith("fallback"):
            outcome = "degraded"
        else:
            outcome = "ok"
        seconds = time.perf_counter() - started
        self.metrics.iterations.labels(outcome).inc()
        self.metrics.duration.observe(seconds)
        now = self.clock()
        self.metrics.last_iteration.set(now)
        with self._lock:
            self.status.last_iteration_at = now
            self.status.plan_id = self.plan.current.plan_id if self.plan else None
            self.status.plan_made_at = self.plan.current.created_at if self.plan else None
        return Iteration(number, outcome, self.status.plan_id, steps, seconds)

    # --- model --------------------------------------------------------------------------------------

    def _refresh_model(self) -> None:
        """Resolve the model location again when due; a failed load keeps the model already held."""
        now = time.monotonic()
        if now < self._next_reload:
            return
        models, settings = self.services.models, self.config.model
        try:
            result = models.reload()
        except Exception as exc:  # any failure to resolve or load: keep serving what we have
            self.metrics.serve.model_reloads.labels("failed").inc()
            self.metrics.model_healthy.set(0)
            self.metrics.alert(Alert.MODEL_LOAD_FAILED, True)
            if self.status.model_healthy is not False:
                kept = f"keeping version {models.current.version}" if models.ready else "no model loaded yet"
                log.warning("model %s could not be loaded (%s): %s", models.location, kept, exc)
            with self._lock:
                self.status.model_healthy, self.status.model_error = False, f"{type(exc).__name__}: {exc}"
        else:
            self.metrics.serve.model_reloads.labels("changed" if result.changed else "unchanged").inc()
            self.metrics.model_healthy.set(1)
            self.metrics.alert(Alert.MODEL_LOAD_FAILED, False)
            if result.changed:
                log.info("model version %s loaded from %s", result.version, models.location)
            with self._lock:
                self.status.model_healthy, self.status.model_error = True, ""
        interval = settings.reload_interval_s
        if models.ready:
            self._next_reload = now + interval if interval > 0 else math.inf
        else:
            self._next_reload = now + min(interval or FIRST_LOAD_RETRY_S, FIRST_LOAD_RETRY_S)

    # --- demand, forecast, plan -------------------------------------------------------------------

    def _fresh_plan(self) -> ActivePlan | None:
        """A plan from the latest data, or None (the source or the forecast failed: keep the last)."""
        panel = self._pull()
        if panel is None:
            return None
        try:
            forecast, forecaster = self._forecast(panel)
        except Exception as exc:  # data the model cannot read (frequency, covariates), or a sampling error
            self.metrics.forecast_failures.inc()
            self.metrics.alert(Alert.FORECAST_FAILED, True)
            log.warning("forecast failed: %s", exc)
            with self._lock:
                self.status.forecast_error = f"{type(exc).__name__}: {exc}"
            return None
        self.metrics.alert(Alert.FORECAST_FAILED, False)
        if forecast is None:
            return None
        with self._lock:
            self.status.forecaster, self.status.forecast_error = forecaster, ""
        self.services.forecasts.put(forecast, forecaster)  # feeds /v1/plan and shadowcast_forecast_age_seconds
        return self._make_plan(forecast, forecaster)

    def _pull(self) -> Panel | None:
        try:
            panel = self.source.pull()
        except Exception as exc:  # unreachable, refused query, invalid data: all mean "no new data"
            self.metrics.source_failures.inc()
            self.metrics.source_healthy.set(0)
            self.metrics.alert(Alert.SOURCE_DOWN, True)
            if self.status.source_healthy is not False:
                log.warning("demand source failed (acting on the last good plan): %s", exc)
            with self._lock:
                self.status.source_healthy, self.status.source_error = False, f"{type(exc).__name__}: {exc}"
            return None
        self.metrics.source_healthy.set(1)
        self.metrics.source_last_success.set(self.clock())
        self.metrics.alert(Alert.SOURCE_DOWN, False)
        if self.status.source_healthy is False:
            log.info("demand source is back")
        with self._lock:
            self.status.source_healthy, self.status.source_error = True, ""
        return panel

    def _forecast(self, panel: Panel) -> tuple[Forecast | None, str]:
        settings = self.config.forecast
        horizon = settings.horizon
        models = self.services.models
        if models.ready:
            model = models.current  # one model for the whole forecast, even if a reload swaps it meanwhile
            model.predictor.check_panel(panel)
            panel.require_future(horizon)
            self.metrics.alert(Alert.MODEL_FALLBACK, False)
            return model.predict(panel.truncate_future(horizon), horizon, settings.num_samples,
                                 seed=settings.seed), model.version
        if self.config.model.fallback == "none":
            return None, ""
        from forecasting.baselines import SeasonalBootstrap

        self.metrics.alert(Alert.MODEL_FALLBACK, True)
        forecaster = SeasonalBootstrap(seed=settings.seed)
        return forecaster.predict(panel, horizon, settings.num_samples), "fallback:seasonal-bootstrap"

    def _make_plan(self, forecast: Forecast, forecaster: str) -> ActivePlan:
        from allocator.policy import plan, step_seconds
        from pipelines.api import planning
        from pipelines.api.schemas import PlanRequest

        defaults = self.config.plan
        request = PlanRequest()  # no overrides: the config's costs, pool and policy
        costs, spec, policy = planning.allocator_inputs(request, defaults)
        fleet = planning.fleet_state(request, self.runtime.controller.fleet())
        result = actionable(plan(forecast, fleet, costs, spec, policy, min_active=defaults.min_active), fleet)
        plan_id, made_at = uuid.uuid4().hex[:16], self.clock()
        body = planning.plan_body(plan_id, made_at, forecast, result)
        units = self.services.extras.get("plan_units")
        if units is not None:  # the plan router's gauge: same figures as after POST /v1/plan
            units.labels("active").set(sum(p.active_units[0] for p in result.clusters.values()))
            units.labels("shadow").set(result.shared_shadow_units[0] if result.shared_shadow_units
                                       else sum(p.shadow_units[0] for p in result.clusters.values()))
        return ActivePlan(CurrentPlan(plan_id, made_at, result, spec, body), step_seconds(forecast.freq),
                          forecast.horizon, forecaster)

    # --- acting -----------------------------------------------------------------------------------

    def _reconcile(self, stop: threading.Event | None) -> tuple[StepRecord, ...]:
        from allocator.controller import SwitchoverFailed

        active = self.plan
        assert active is not None
        step = active.step_at(self.clock())
        with self._lock:
            self.status.plan_step = step
        expired = step >= active.horizon
        self.metrics.alert(Alert.PLAN_EXPIRED, expired)
        if expired:  # the plan says nothing about now: hold the fleet rather than guess
            return ()
        current = active.current
        self._observe_desired(current.plan, step)
        taken: list[StepRecord] = []
        failed = False
        for _ in range(self.config.max_steps_per_interval):
            if stop is not None and stop.is_set():
                break
            try:
                result = self.runtime.controller.reconcile(current.plan, current.spec, plan_id=current.plan_id,
                                                           step=step)
            except SwitchoverFailed as exc:  # ran and rolled back; its id is spent, so the next step moves on
                sw = exc.switchover
                self.metrics.switchovers.labels(str(sw.kind), str(sw.phase)).inc()
                taken.append(self._record(StepRecord(self.clock(), str(sw.kind), sw.cluster_id, sw.id, sw.error,
                                                     str(sw.phase))))
                continue
            except Exception as exc:  # a driver, lock or validation error: retried on the next pass
                failed = True
                self.metrics.reconcile_errors.labels(type(exc).__name__).inc()
                taken.append(self._record(StepRecord(self.clock(), "error", "", "", str(exc), type(exc).__name__)))
                log.warning("reconcile step failed: %s: %s", type(exc).__name__, exc)
                break
            if result is None:
                break
            outcome = ""
            if result.action in ("switchover", "revert"):
                sw = self.runtime.store.get_switchover(result.subject)
                outcome = str(sw.phase)
                self.metrics.switchovers.labels(str(sw.kind), outcome).inc()
            self.metrics.reconcile_steps.labels(result.action).inc()
            taken.append(self._record(StepRecord(self.clock(), result.action, result.cluster_id, result.subject,
                                                 result.detail, outcome)))
        self.metrics.alert(Alert.RECONCILE_FAILED, failed)
        return tuple(taken)

    def _record(self, step: StepRecord) -> StepRecord:
        log.info("%s %s %s %s%s", step.action, step.cluster_id, step.subject, step.detail,
                 f" ({step.outcome})" if step.outcome else "")
        with self._lock:
            self.status.steps.append(step)
        return step

    def _observe_desired(self, plan: Plan, step: int) -> None:
        for cluster_id, cluster in plan.clusters.items():
            at = min(step, len(cluster.active_units) - 1)
            self.metrics.desired_units.labels(cluster_id, "active").set(cluster.active_units[at])
            self.metrics.desired_units.labels(cluster_id, "shadow").set(cluster.shadow_units[at])

    def _observe_health(self) -> None:
        """Count and list what the health monitor did since the last pass."""
        if self.monitor is None:
            return
        actions = self.monitor.actions[self._monitor_seen:]
        self._monitor_seen += len(actions)
        for action in actions:
            self.metrics.health_actions.labels(action.action).inc()
            subject = f"{action.resource_id} -> {action.replacement_id}" if action.replacement_id else action.resource_id
            self._record(StepRecord(action.at, f"health:{action.action}", "", subject, action.detail))

    def _observe_fleet(self) -> None:
        try:
            fleet = self.runtime.controller.fleet()
        except Exception as exc:  # the driver is unreachable; the next pass reports it through reconcile
            log.warning("could not read the fleet: %s", exc)
            return
        counts = {cluster: {str(state): n for state, n in states.items()} for cluster, states in fleet.items()}
        self.metrics.set_fleet(counts, self.plan.current.plan.clusters if self.plan else ())

    # --- status for GET /v1/run ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            status = {k: v for k, v in vars(self.status).items() if k != "steps"}
            status["steps"] = [asdict(s) for s in self.status.steps]
        return status

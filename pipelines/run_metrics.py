"""The control loop's Prometheus metrics, registered through the serving app's hooks
(`ServeMetrics.gauge/counter/histogram`) so the one `/metrics` of `shadowcast run` shows the API's
and the loop's figures together. Alerts are plain 0/1 gauges an alerting rule can fire on:
`shadowcast_alert{alert="source_down"} == 1`."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pipelines.api.metrics import ServeMetrics

# An iteration pulls, samples, plans and may provision or switch: from milliseconds to a minute.
LOOP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
POOL_STATES = ("cold", "warm", "active", "standby", "failed")


class Alert:
    SOURCE_DOWN = "source_down"  # the demand source failed on the last pull: acting on the last good plan
    MODEL_LOAD_FAILED = "model_load_failed"  # the last (re)load failed: the previous model (if any) serves
    MODEL_FALLBACK = "model_fallback"  # no model has loaded yet: forecasts come from the fallback
    FORECAST_FAILED = "forecast_failed"  # the model could not forecast the latest data
    PLAN_EXPIRED = "plan_expired"  # the last good plan's horizon has passed: the fleet is held as it is
    RECONCILE_FAILED = "reconcile_failed"  # the last reconcile step raised (driver, lock or switchover error)

    ALL = (SOURCE_DOWN, MODEL_LOAD_FAILED, MODEL_FALLBACK, FORECAST_FAILED, PLAN_EXPIRED, RECONCILE_FAILED)


class LoopMetrics:
    def __init__(self, metrics: ServeMetrics) -> None:
        self.serve = metrics
        gauge, counter = metrics.gauge, metrics.counter
        self.iterations = counter("loop_iterations_total", "Control-loop iterations by outcome "
                                  "(ok, degraded: acted on a kept plan or a fallback, idle: nothing to act on).",
                                  ["outcome"])
        self.duration = metrics.histogram("loop_duration_seconds", "Duration of one control-loop iteration.",
                                          buckets=LOOP_BUCKETS)
        self.last_iteration = gauge("loop_last_iteration_timestamp_seconds", "When the last iteration ended.")
        self.source_healthy = gauge("source_healthy", "1 when the last pull of demand data succeeded.")
        self.source_failures = counter("source_failures_total", "Failed pulls of demand data.")
        self.source_last_success = gauge("source_last_success_timestamp_seconds", "When demand was last pulled.")
        self.model_healthy = gauge("model_healthy", "1 when the last model (re)load succeeded.")
        self.forecast_failures = counter("forecast_failures_total", "Forecasts of the latest data that failed.")
        self.plan_age = gauge("plan_age_seconds", "Seconds since the plan acted on was made (-1 before the first).")
        self.pool_units = gauge("pool_units", "Units the driver holds, by cluster and state.", ["cluster", "state"])
        self.desired_units = gauge("plan_desired_units", "Units the plan wants now, by cluster and kind.",
                                   ["cluster", "kind"])
        self.reconcile_steps = counter("reconcile_steps_total", "Reconcile steps taken, by action.", ["action"])
        self.reconcile_errors = counter("reconcile_errors_total", "Reconcile steps that raised, by error type.",
                                        ["error"])
        # The same counter the switchover routes count into: manual and loop switchovers side by side.
        self.switchovers = counter("switchovers_total", "Switchover requests by kind and outcome.",
                                   ["kind", "outcome"])
        self.health_actions = counter("health_actions_total", "What the health monitor did about failed units "
                                      "(replaced-shadow, failed-over, released-standby, error).", ["action"])
        self.alerts = gauge("alert", "1 while an alert condition holds.", ["alert"])
        self.leader = gauge("controller_leader", "1 while this process holds the store's control-loop lock.")
        for name in Alert.ALL:
            self.alerts.labels(name).set(0)
        self.plan_age.set(-1)

    def alert(self, name: str, firing: bool) -> None:
        self.alerts.labels(name).set(1 if firing else 0)

    def track_plan_age(self, made_at: Callable[[], float | None], clock: Callable[[], float]) -> None:
        def age() -> float:
            made = made_at()
            return -1.0 if made is None else max(0.0, clock() - made)

        self.plan_age.set_function(age)

    def set_fleet(self, fleet: dict[str, dict[str, int]], clusters: Iterable[str]) -> None:
        """`fleet`: cluster -> state -> units (states absent count 0, so a drained state reads 0)."""
        for cluster in sorted(set(clusters) | set(fleet)):
            counts = fleet.get(cluster, {})
            for state in POOL_STATES:
                self.pool_units.labels(cluster, state).set(counts.get(state, 0))

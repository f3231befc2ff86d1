"""The shadowcast controller: the quantile policy replayed step by step, with online calibration.

At the start of each step, from the latest forecast's samples at that step (capacity units):
- **switchover** (scale-out): if P(demand > the active set) exceeds the switch threshold, i.e. the
  active set is below the `active_level` quantile, warm shadows join it now, before the spike;
  **revert**: if the active set is above the quantile at the stricter revert level (`revert_risk`
  times the threshold's probability), the extra units step back to warm, ready for the next spike;
  in **tiered** mode the whole active set is replaced by a warm replica of the new size and the
  former one waits on standby, to come back if the spike passes;
- **shadow pool**: active + warm covers the `pool_level` quantile of the largest demand over the cold
  lead time, ordered one lead time ahead; warm units are released only when no step within
  cold lead / warm fraction needs them (holding one longer costs more than booting it again);
- **lead windows** (`allocator.policy.timing_leads`): the active set covers the steps an activation
  takes, the pool those a boot takes, each plus the step in which it lands part-way when arriving
  that fraction late costs more than starting a step early; so they differ between settings;
- **calibration**: both levels follow realised coverage (`allocator.calibration`), the pool's from
  the largest demand seen over each lead window, known one lead time later;
- a guard keeps at least the demand just observed active after the forecast missed it (or always,
  or never): a forecast that has just been wrong should not be trusted to scale down.
"""

from __future__ import annotations

import math

import numpy as np

from allocator.autoscalers import ForecastWindow, Observation
from allocator.calibration import AdaptiveLevel, CalibrationSettings
from allocator.fleetsim import Fleet, Targets
from allocator.policy import levels_from_costs, quantile_of_sorted, region_resilient_total, timing_leads, units
from allocator.types import CostModel, PoolSpec, SwitchoverMode

GUARDS = ("after-miss", "always", "off")


class Shadowcast:
    name, knob, scale_in_to_warm = "shadowcast", "unserved_penalty", True

    def __init__(
        self, clusters: int, costs: CostModel, penalties: tuple[float, ...], spec: PoolSpec, step_s: float,
        *, calibration: CalibrationSettings | None = CalibrationSettings(), mode: SwitchoverMode = SwitchoverMode.SCALE_OUT,
        guard: str = "after-miss", regions: int = 1, region_resilient: bool = False, min_active: int = 1,
        revert_risk: float = 0.5, name: str | None = None,
    ) -> None:
        if not 0 < revert_risk <= 1:
            raise ValueError(f"revert_risk must lie in (0, 1], got {revert_risk}")
        if guard not in GUARDS:
            raise ValueError(f"guard must be one of {GUARDS}, got {guard!r}")
        if mode is SwitchoverMode.REVERT:
            raise ValueError("mode must be scale-out or tiered")
        self.name = name or self.name
        self.knob_values = tuple(float(p) for p in penalties)
        prices = [CostModel(costs.active_unit_cost, costs.warm_fraction, p) for p in penalties]
        levels = [levels_from_costs(price) for price in prices]
        leads = [timing_leads(spec, step_s, price) for price in prices]
        shape = (len(penalties), clusters)
        # Per setting: how far ahead the active set and the pool look (penalty-dependent, see timing_leads).
        self.active_lead = np.array([lead.active for lead in leads])[:, None]
        self.pool_lead = np.array([lead.pool for lead in leads])[:, None]
        self.windows = sorted(set(self.active_lead.ravel()) | set(self.pool_lead.ravel()) | {0})
        active = np.broadcast_to(np.array([lv.active for lv in levels])[:, None], shape)
        pool = np.broadcast_to(np.array([lv.pool for lv in levels])[:, None], shape)
        self.calibrate = calibration is not None
        settings = calibration or CalibrationSettings()
        self.active_level = AdaptiveLevel(active, settings)
        self.pool_level = AdaptiveLevel(pool, settings)
        self.mode, self.guard, self.min_active = mode, guard, min_active
        self.revert_risk = revert_risk
        self.regions = regions if region_resilient else 1
        # Hold a warm unit through an idle spell shorter than this: a re-boot would cost more.
        cold_steps = spec.cold_provision_s / step_s
        self.hold = max(int(self.pool_lead.max()), math.ceil(cold_steps / max(costs.warm_fraction, 1e-6) - 1e-9))
        depth = int(self.pool_lead.max()) + 1
        self._expected = np.full(shape, np.inf)  # this step's active-level quantile, for calibration
        self._missed = np.zeros(shape, dtype=bool)  # last step's demand exceeded that quantile
        self._pool_expected = np.full((depth, *shape), np.inf)  # pool quantile set at each recent step
        self._recent = np.zeros((depth, clusters))  # demand of the recent steps, newest first
        self._switched = np.zeros(shape, dtype=bool)
        self._switch_capacity = np.zeros(shape, dtype=np.int64)
        self._peak_since = np.zeros(shape)
        self.switchovers = np.zeros(shape, dtype=np.int64)
        self.reverts = np.zeros(shape, dtype=np.int64)
        self.steps = 0

    def initial(self, demand: np.ndarray, forecast: ForecastWindow | None) -> tuple[np.ndarray, np.ndarray]:
        now = np.maximum(units(np.asarray(demand)[None, :]), self.min_active)
        active = np.broadcast_to(now, self.active_level.level.shape).copy()
        if forecast is None:
            return active, np.zeros_like(active)
        total = units(self._lead_quantile(forecast, 0, self.pool_lead, self.pool_level.level))
        return active, np.maximum(total - active, 0)

    def _lead_quantile(self, fw: ForecastWindow, h: int | slice, lead: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Per setting, the `level` quantile of the largest demand over its own lead window."""
        extra = (None,) if isinstance(h, slice) else ()
        result = None
        for w in np.unique(lead):
            values = quantile_of_sorted(fw.window(int(w))[None, :, h, :], level[(..., *extra)])
            result = values if result is None else np.where((lead == w)[(..., *extra)], values, result)
        return result

    def decide(self, obs: Observation, fleet: Fleet) -> Targets:
        fw = obs.forecast
        if fw is None:
            raise ValueError("the shadowcast controller needs a forecast at every step")
        h = fw.offset(obs.t)
        a_level = self.active_level.level
        r_level = 1 - (1 - a_level) * self.revert_risk  # revert only when a smaller set is safer still
        p_level = np.maximum(self.pool_level.level, a_level)
        # The active set must carry demand until an activation decided next step would land.
        expected = quantile_of_sorted(fw.window(0)[None, :, h, :], a_level)
        floor = self._floor(obs.last_demand)
        up = np.maximum(np.maximum(units(self._lead_quantile(fw, h, self.active_lead, a_level)), floor),
                        self.min_active)
        down = np.maximum(np.maximum(units(self._lead_quantile(fw, h, self.active_lead, r_level)), floor),
                          self.min_active)

        current = fleet.serving_or_soon
        active = np.where(current < up, up, np.where(current > down, down, current))
        self._count_events(current, active, up > floor)

        reach = self._lead_quantile(fw, slice(h, None), self.pool_lead, p_level)  # [V, C, steps left]
        total = units(reach)
        total[..., 0] = np.maximum(total[..., 0], active)
        total = region_resilient_total(total, self.regions)
        # Order now what must be there when an order placed now lands.
        landing = np.broadcast_to(np.minimum(self.pool_lead, total.shape[-1] - 1), active.shape)
        order = np.maximum(total[..., 0], np.take_along_axis(total, landing[..., None], axis=-1)[..., 0])
        keep = total[..., : self.hold + 1].max(axis=-1)
        standby = None
        if self.mode is SwitchoverMode.TIERED:
            active, standby = self._tiered(fleet, current, active, up, down)
            # The warm replica must carry the whole pool on its own, beside the set it replaces.
            aside = np.where(standby > 0, standby, active)
            order, keep = order + aside, keep + aside

        self._expected = expected
        self._pool_expected = np.roll(self._pool_expected, 1, axis=0)
        self._pool_expected[0] = reach[..., 0]
        return Targets(active, np.maximum(order, active), np.maximum(keep, active), standby)

    def _floor(self, last_demand: np.ndarray) -> np.ndarray | int:
        """The guard: at least the demand just seen, always or only after the forecast missed it."""
        if self.guard == "off":
            return 0
        seen = units(last_demand)[None, :]
        return seen if self.guard == "always" else np.where(self._missed, seen, 0)

    def _tiered(self, fleet: Fleet, current, active, up, down):
        """A larger warm replica takes over and the former active set waits on standby; revert when
        the spike is not coming (the standby set is enough again at the revert level)."""
        standby = fleet.standby.copy()
        switch = (current < up) & (standby == 0)
        revert = (standby > 0) & (down <= standby)
        standby = np.where(switch, current, np.where(revert, 0, standby))
        active = np.where(revert, fleet.standby, active)
        return active, standby

    def _count_events(self, current: np.ndarray, active: np.ndarray, predicted: np.ndarray) -> None:
        raise_now = (active > current) & predicted
        self.switchovers += raise_now & ~self._switched
        self._switch_capacity = np.where(raise_now, np.maximum(active, self._switch_capacity), self._switch_capacity)
        self._switched |= raise_now
        lower = (active < current) & self._switched
        # The spike did not come, or came smaller than the capacity switched in for it.
        self.reverts += lower & (self._peak_since < self._switch_capacity - 1 + 1e-9)
        self._switched &= ~lower
        self._peak_since = np.where(lower, 0.0, self._peak_since)
        self._switch_capacity = np.where(lower, 0, self._switch_capacity)

    def observe(self, t: int, demand: np.ndarray) -> None:
        demand = np.asarray(demand, dtype=float)[None, :]
        self._peak_since = np.where(self._switched, np.maximum(self._peak_since, demand), 0.0)
        self._recent = np.roll(self._recent, 1, axis=0)
        self._recent[0] = demand[0]
        self.steps += 1
        self._missed = demand > self._expected
        if not self.calibrate:
            return
        self.active_level.update(self._missed)
        # The pool quantile set `lead` steps ago covered the lead window that ends now.
        miss = np.zeros(self.pool_level.level.shape, dtype=bool)
        observed = np.zeros_like(miss)
        for w in np.unique(self.pool_lead):
            mine = np.broadcast_to(self.pool_lead == w, miss.shape)
            seen = self._recent[: w + 1].max(axis=0)[None, :]
            miss = np.where(mine, seen > self._pool_expected[w], miss)
            observed = np.where(mine, self.steps > w, observed)
        self.pool_level.update(miss, observed)

    def events(self) -> dict[str, np.ndarray]:
        return {"switchovers": self.switchovers, "reverts": self.reverts}

"""The ``threshold`` policy: the seed demo's rule (see the package docstring)."""

from __future__ import annotations

import dataclasses
import math

from workload.autoscale.policy.base import (
    Bounds,
    Decision,
    Guarded,
    Observation,
    PolicyConfigError,
    PolicyState,
)
from workload.queues.base import QueueStats
from workload.settings import check_fields, setting


@dataclasses.dataclass(frozen=True)
class ThresholdConfig(Bounds):
    """The seed demo's monitor options (defaults are the seed's)."""

    scale_up_threshold: int = setting(
        100,
        "threshold policy: free messages above which one --step is added",
        flags=("-j", "--scale-up-threshold", "--scale_up_threshold"),
        env=("QW_SCALE_UP",),
        kind=int,
        lo=0,
        hi=10**9,
        stack="scaleUpThreshold",
    )
    scale_down_threshold: int = setting(
        0,
        "threshold policy: free messages at or below which one --step is removed",
        flags=("-n", "--scale-down-threshold", "--scale_dn_threshold"),
        env=("QW_SCALE_DOWN",),
        kind=int,
        lo=0,
        hi=10**9,
        stack="scaleDownThreshold",
    )
    step: int = setting(
        1,
        "threshold policy: servers added or removed per change",
        flags=("--step",),
        env=("QW_STEP",),
        kind=int,
        lo=1,
        hi=1000,
        stack="thresholdStep",
    )
    up_cooldown_s: float = setting(
        60.0,
        "threshold policy: seconds after a scale-up before the next scale-up (default -c)",
        flags=("--up-cooldown",),
        env=("QW_UP_COOLDOWN",),
        kind=float,
        lo=0,
        hi=86400,
        stack="scaleUpCooldown",
        stack_default=300.0,
    )
    down_cooldown_s: float = setting(
        60.0,
        "threshold policy: seconds after any change before a scale-down (default -c)",
        flags=("--down-cooldown",),
        env=("QW_DOWN_COOLDOWN",),
        kind=float,
        lo=0,
        hi=86400,
        stack="scaleDownCooldown",
        stack_default=600.0,
    )

    def validate(self) -> ThresholdConfig:
        check_fields(self, PolicyConfigError)
        self._validate_bounds()
        if self.scale_down_threshold >= self.scale_up_threshold:
            raise PolicyConfigError(
                "scale_down_threshold",
                self.scale_down_threshold,
                f"less than scale_up_threshold ({self.scale_up_threshold}), or the group flaps",
            )
        return self


class ThresholdPolicy(Guarded):
    """The seed's policy: one ``step`` at a time on free-message thresholds, with cooldowns."""

    name = "threshold"
    config: ThresholdConfig

    def _decide(self, obs: Observation, stats: QueueStats, current: int, state: PolicyState) -> Decision:
        c = self.config
        free = stats.free
        since_up = math.inf if state.last_up_at is None else obs.now - state.last_up_at
        since_any = math.inf if state.last_action_at is None else obs.now - state.last_action_at
        desired, reason = current, f"free {free} within ({c.scale_down_threshold}, {c.scale_up_threshold}]"
        if current < c.min_size or current > c.max_size:
            desired = c.clamp(current)
            reason = f"group size {current} outside [{c.min_size}, {c.max_size}]"
        elif free > c.scale_up_threshold:
            if current >= c.max_size:
                reason = f"free {free} > {c.scale_up_threshold} but already at max {c.max_size}"
            elif since_up < c.up_cooldown_s:
                reason = f"free {free} > {c.scale_up_threshold}; up cooldown {c.up_cooldown_s - since_up:.0f}s left"
            else:
                desired = c.clamp(current + c.step)
                reason = f"free {free} > {c.scale_up_threshold}: up {desired - current}"
        elif free <= c.scale_down_threshold:
            if current <= c.min_size:
                reason = f"free {free} <= {c.scale_down_threshold} but already at min {c.min_size}"
            elif since_any < c.down_cooldown_s:
                reason = f"free {free} <= {c.scale_down_threshold}; down cooldown {c.down_cooldown_s - since_any:.0f}s left"
            else:
                desired = c.clamp(current - c.step)
                reason = f"free {free} <= {c.scale_down_threshold}: down {current - desired}"
        new = state
        if desired > current:
            new = dataclasses.replace(state, last_up_at=obs.now, last_action_at=obs.now)
        elif desired < current:
            new = dataclasses.replace(state, last_action_at=obs.now)
        return Decision(desired, reason, new, current)

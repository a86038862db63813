"""Scaling policies: pure functions from what the monitor observed to a desired capacity.

No I/O and no clock reads in here: the caller passes the time in the :class:`Observation`, and
the previous :class:`PolicyState` in; a :class:`Decision` (desired capacity, the reason in words,
the new state) comes out. The same code runs in the monitor, the demo and ``bench.autoscale``.

Two policies:

``threshold``
    The seed demo's rule: one step up when free messages exceed ``scale_up_threshold`` (-j), one
    step down when they are at or below ``scale_down_threshold`` (-n), within min/max, with a
    cooldown after scaling up and another after any action before scaling down.

``target``
    Sizes the group for a target wait. From the queue's stats it estimates the offered load
    (messages in flight plus the net growth of the queue, by Little's law), the arrival rate, and
    the backlog that will have piled up by the time a new server has booted; it keeps a per-message
    service time estimate that observed drains correct; it picks the smallest fleet whose
    probability of a wait above the target stays under ``wait_quantile`` (Erlang C), plus what
    drains the projected backlog within the target. Scale-up acts at once (at most
    ``max_step_up``), scale-down takes the highest recommendation of the last
    ``scale_down_window_s`` seconds (at most ``max_step_down``), an empty queue for
    ``idle_to_zero_s`` seconds scales to zero and ``activation_backlog`` messages wake it.

Both hold capacity when the queue stats or the group size could not be read.
"""
from __future__ import annotations

import abc

import dataclasses
import math
from typing import Any, Mapping, Protocol

from workload.queues.base import QueueStats
from workload.settings import SettingError, check_fields, setting

__all__ = [
    "Observation", "Decision", "PolicyState", "PolicyConfigError",
    "ThresholdConfig", "TargetConfig", "ThresholdPolicy", "TargetPolicy",
    "Policy", "make_policy", "erlang_c_servers", "POLICIES",
]


class PolicyConfigError(SettingError):
    """A policy option is out of range; names the key, the value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the monitor saw at ``now`` (seconds, any monotonic origin).

    ``stats`` is None when the queue could not be read; ``current`` is None when the group could
    not be read. ``pending`` counts members of ``current`` still booting (not consuming yet).
    """

    now: float
    stats: QueueStats | None
    current: int | None
    pending: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": round(self.now, 3),
            "stats": self.stats.as_dict() if self.stats else None,
            "current": self.current,
            "pending": self.pending,
        }


@dataclasses.dataclass(frozen=True)
class PolicyState:
    """What a policy remembers between observations. Opaque to callers; start with ``PolicyState()``."""

    last_now: float | None = None
    last_total: int | None = None
    last_claimed: int | None = None
    last_free: int | None = None
    last_up_at: float | None = None  # time of the last scale-up this policy asked for
    last_action_at: float | None = None  # time of the last change in either direction
    last_down_at: float | None = None  # time of the last scale-down this policy asked for
    arrival_rate: float | None = None  # messages/s, smoothed
    service_time: float | None = None  # seconds per message per slot, learnt from drains
    idle_since: float | None = None  # when the queue was last seen becoming empty
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, wanted) inside the down window
    watching_since: float | None = None  # first observation: no scale-down before a full window


@dataclasses.dataclass(frozen=True)
class Decision:
    """The desired capacity (None = leave the group alone, size unknown), why, and the new state."""

    desired: int | None
    reason: str
    state: PolicyState
    current: int | None = None
    estimates: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def action(self) -> str:
        """``up``, ``down`` or ``hold`` compared with the group size that was observed."""
        if self.desired is None or self.current is None or self.desired == self.current:
            return "hold"
        return "up" if self.desired > self.current else "down"

    def as_dict(self) -> dict[str, Any]:
        return {
            "desired": self.desired,
            "action": self.action,
            "reason": self.reason,
            "estimates": {k: round(v, 4) for k, v in self.estimates.items()},
        }


# ---------------------------------------------------------------------------- configuration

# Each field declares its option once (workload/settings.py): range, help, the monitor's flag and
# variable, and the stack key the stack's monitor is set by. min_size and max_size are shared.
_MIN = dict(help="fewest consumer servers in the group (target policy with 0: scale to zero when idle)",
            flags=("-m", "--min"), env=("QW_MIN",), kind=int, lo=0, hi=10000, stack="minSize",
            stack_default=1)
_MAX = dict(help="most consumer servers in the group",
            flags=("-x", "--max"), env=("QW_MAX",), kind=int, lo=0, hi=10000, stack="maxSize",
            stack_default=10)


@dataclasses.dataclass(frozen=True)
class _Bounds:
    min_size: int = setting(0, **_MIN)
    max_size: int = setting(2, **_MAX)

    def _validate_bounds(self) -> None:
        if self.max_size < self.min_size:
            raise PolicyConfigError("max_size", self.max_size,
                                    f"at least min_size ({self.min_size})")

    def clamp(self, n: int) -> int:
        return max(self.min_size, min(self.max_size, n))


@dataclasses.dataclass(frozen=True)
class ThresholdConfig(_Bounds):
    """The seed demo's monitor options (defaults are the seed's)."""

    scale_up_threshold: int = setting(
        100, "threshold policy: free messages above which one --step is added",
        flags=("-j", "--scale-up-threshold", "--scale_up_threshold"), env=("QW_SCALE_UP",), kind=int,
        lo=0, hi=10**9, stack="scaleUpThreshold")
    scale_down_threshold: int = setting(
        0, "threshold policy: free messages at or below which one --step is removed",
        flags=("-n", "--scale-down-threshold", "--scale_dn_threshold"), env=("QW_SCALE_DOWN",), kind=int,
        lo=0, hi=10**9, stack="scaleDownThreshold")
    step: int = setting(1, "threshold policy: servers added or removed per change", flags=("--step",),
                        env=("QW_STEP",), kind=int, lo=1, hi=1000, stack="thresholdStep")
    up_cooldown_s: float = setting(
        60.0, "threshold policy: seconds after a scale-up before the next scale-up (default -c)",
        flags=("--up-cooldown",), env=("QW_UP_COOLDOWN",), kind=float, lo=0, hi=86400,
        stack="scaleUpCooldown", stack_default=300.0)
    down_cooldown_s: float = setting(
        60.0, "threshold policy: seconds after any change before a scale-down (default -c)",
        flags=("--down-cooldown",), env=("QW_DOWN_COOLDOWN",), kind=float, lo=0, hi=86400,
        stack="scaleDownCooldown", stack_default=600.0)

    def validate(self) -> "ThresholdConfig":
        check_fields(self, PolicyConfigError)
        self._validate_bounds()
        if self.scale_down_threshold >= self.scale_up_threshold:
            raise PolicyConfigError(
                "scale_down_threshold", self.scale_down_threshold,
                f"less than scale_up_threshold ({self.scale_up_threshold}), or the group flaps")
        return self


@dataclasses.dataclass(frozen=True)
class TargetConfig(_Bounds):
    """Options of the target-wait policy.

    ``min_size`` 0 with ``idle_to_zero_s`` set: at least one server while there is work, none
    after the queue has been empty ``idle_to_zero_s`` seconds, woken by ``activation_backlog``
    messages. ``min_size`` 0 without it: none as soon as the estimated load is nil for a whole
    ``scale_down_window_s``. ``min_size`` above 0: never fewer.
    """

    min_size: int = setting(0, **_MIN)
    max_size: int = setting(20, **_MAX)
    target_wait_s: float = setting(
        30.0, "seconds from post to start of processing to keep under, at --wait-quantile",
        flags=("--target-wait",), env=("QW_TARGET_WAIT",), kind=float, lo=0.1, hi=86400, stack="targetWait")
    wait_quantile: float = setting(
        0.95, "share of messages that should start within --target-wait", flags=("--wait-quantile",),
        env=("QW_WAIT_QUANTILE",), kind=float, lo=0.5, hi=0.999, stack="waitQuantile")
    boot_time_s: float = setting(
        60.0, "seconds from asking for a server to it consuming (err on the slow side)",
        flags=("--boot-time",), env=("QW_BOOT_TIME",), kind=float, lo=0, hi=3600, stack="bootTime")
    service_time_s: float = setting(
        1.0, "first estimate of seconds one message takes; observed drains correct it (err on the "
        "slow side)", flags=("--service-time",), env=("QW_SERVICE_TIME",), kind=float, lo=0.001,
        hi=86400, stack="serviceTime")
    concurrency: int = setting(
        1, "messages one consumer server handles at once (its -w)", flags=("--worker-concurrency",),
        env=("QW_WORKER_CONCURRENCY",), kind=int, lo=1, hi=1000, stack="consumerConcurrency")
    max_step_up: int = setting(10, "most servers added by one decision", flags=("--max-step-up",),
                               env=("QW_MAX_STEP_UP",), kind=int, lo=1, hi=10000, stack="maxStepUp")
    max_step_down: int = setting(10, "most servers removed by one decision", flags=("--max-step-down",),
                                 env=("QW_MAX_STEP_DOWN",), kind=int, lo=1, hi=10000, stack="maxStepDown")
    scale_down_window_s: float = setting(
        30.0, "scale down only to the highest need seen over this many seconds", flags=("--down-window",),
        env=("QW_DOWN_WINDOW",), kind=float, lo=0, hi=86400, stack="downWindow")
    idle_to_zero_s: float | None = setting(
        120.0, "with -m 0: seconds of empty queue before scaling to zero ('never': zero as soon as the "
        "load is nil for a --down-window)", flags=("--idle-to-zero",), env=("QW_IDLE_TO_ZERO",),
        kind=float, lo=0, hi=86400 * 7, none_word="never", stack="idleToZero")
    activation_backlog: int = setting(
        1, "messages waiting that wake a group scaled to zero", flags=("--activation",),
        env=("QW_ACTIVATION",), kind=int, lo=1, hi=10**9, stack="activation")
    rate_smoothing_s: float = setting(
        30.0, "time constant in seconds of the arrival-rate average", flags=("--rate-smoothing",),
        env=("QW_RATE_SMOOTHING",), kind=float, lo=0, hi=3600, stack="rateSmoothing")
    up_tolerance: float = setting(  # servers the need must pass the fleet by before one is added
        0.5, "servers the need must pass the fleet by before one is added", kind=float, lo=0, hi=0.99)
    down_tolerance: float = setting(  # scale down only when the need is this share (at least half a server) below
        0.0, "share of the need (at least half a server) it must fall below the fleet to scale down",
        kind=float, lo=0, hi=1)
    backlog_allowance: float = setting(
        0.5, "share of (arrival rate x --target-wait) left queued on purpose so servers stay busy",
        flags=("--backlog-allowance",), env=("QW_BACKLOG_ALLOWANCE",), kind=float, lo=0, hi=1,
        stack="backlogAllowance")
    drain_time_s: float | None = setting(
        None, "seconds to drain a backlog beyond the allowance in (unset: target wait + boot time)",
        flags=("--drain-time",), env=("QW_DRAIN_TIME",), kind=float, lo=1, hi=86400, optional=True,
        stack="drainTime")

    def validate(self) -> "TargetConfig":
        check_fields(self, PolicyConfigError)
        self._validate_bounds()
        if self.max_size < 1:
            raise PolicyConfigError("max_size", self.max_size, "at least 1 for the target policy")
        return self


# ---------------------------------------------------------------------------- shared helpers

def _hold(obs: Observation, state: PolicyState, why: str) -> Decision:
    """Keep the group as it is; keep the learnt state but forget the stats baseline."""
    new = dataclasses.replace(state, last_now=None, last_total=None, last_claimed=None,
                              last_free=None)
    return Decision(obs.current, f"hold: {why}", new, obs.current)


def _missing(obs: Observation) -> str | None:
    if obs.stats is None and obs.current is None:
        return "queue stats and group size unavailable"
    if obs.stats is None:
        return "queue stats unavailable"
    if obs.current is None:
        return "group size unavailable"
    return None


def erlang_c_servers(load: float, service_time: float, wait: float, quantile: float,
                     limit: int = 100000) -> int:
    """Fewest servers for which P(wait > ``wait``) <= 1 - ``quantile`` in an M/M/c queue.

    ``load`` is the offered load in busy servers (arrival rate x service time).
    """
    if load <= 0:
        return 0
    c = max(1, math.floor(load))
    while c < limit:
        if c > load:
            # Erlang C by the stable recurrence on the Erlang B blocking probability.
            b = 1.0
            for k in range(1, c + 1):
                b = load * b / (k + load * b)
            p_wait = b / (1 - (load / c) * (1 - b))
            tail = p_wait * math.exp(-(c - load) * wait / service_time)
            if tail <= 1 - quantile:
                return c
        c += 1
    return limit


# ---------------------------------------------------------------------------- policies

class Policy(Protocol):
    name: str

    def decide(self, obs: Observation, state: PolicyState) -> Decision: ...


class _Guarded(abc.ABC):
    """What every policy does first: validate its config once, and hold the group's size when the
    observation is missing or failed (never scale, least of all to zero, on missing data)."""

    def __init__(self, config):
        self.config = config.validate()

    def decide(self, obs: Observation, state: PolicyState) -> Decision:
        why = _missing(obs)
        return _hold(obs, state, why) if why else self._decide(obs, state)

    @abc.abstractmethod
    def _decide(self, obs: Observation, state: PolicyState) -> Decision:
        """The policy's own rule, on an observation known to be complete."""


class ThresholdPolicy(_Guarded):
    """The seed's policy: one ``step`` at a time on free-message thresholds, with cooldowns."""

    name = "threshold"
    config: ThresholdConfig

    def _decide(self, obs: Observation, state: PolicyState) -> Decision:
        c = self.config
        current, free = obs.current, obs.stats.free
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


class TargetPolicy(_Guarded):
    """Sizes the group for a target wait from backlog, arrival rate, throughput and boot time."""

    name = "target"
    config: TargetConfig

    def _decide(self, obs: Observation, state: PolicyState) -> Decision:
        c = self.config
        st, current, pending = obs.stats, obs.current, max(0, min(obs.pending, obs.current))
        free, claimed = max(0, st.free), max(0, st.claimed)
        total = free + claimed
        active = current - pending
        service = state.service_time or c.service_time_s
        slots = c.concurrency

        # Arrival rate from the stats delta: arrivals = growth + completions, and completions
        # follow from the messages in flight by Little's law (in flight = rate x service time).
        rate = state.arrival_rate
        dt = None if state.last_now is None else obs.now - state.last_now
        if dt is not None and dt > 0 and state.last_total is not None:
            in_flight = (claimed + (state.last_claimed or 0)) / 2
            growth = (total - state.last_total) / dt
            saturated = free > 0 and (state.last_free or 0) > 0 and active > 0
            if saturated and growth < 0:
                # A drain shows the throughput is at least what left the queue; if that beats
                # our service time estimate, the estimate was too slow.
                drained_service = in_flight / (-growth)
                if drained_service < service:
                    w = 1 - math.exp(-dt / max(c.rate_smoothing_s, 1e-9))
                    service = max(drained_service, service + w * (drained_service - service))
            inst = max(0.0, growth + in_flight / service)
            if rate is None:
                rate = inst
            else:
                tau = c.rate_smoothing_s
                w = 1.0 if tau == 0 else 1 - math.exp(-dt / tau)
                rate = rate + w * (inst - rate)
        if rate is None:
            rate = claimed / service  # first look: what is in flight is what is arriving

        # Offered load in slots, and the backlog projected to when a new server would be ready.
        if total == 0 and rate * service < 0.05:
            rate = 0.0  # what is left of the average after the queue emptied is not load
        load = rate * service
        steady_slots = erlang_c_servers(load, service, c.target_wait_s, c.wait_quantile,
                                        limit=c.max_size * slots + 1)
        capacity_rate = active * slots / service
        projected = free + max(0.0, rate - capacity_rate) * c.boot_time_s
        # A backlog the fleet clears within part of the target wait may stand (the fleet then
        # runs busy, not waiting for work); more than that is drained within drain_time_s
        # (by default a boot plus a target wait: a faster drain buys little and costs much),
        # less than that lets the fleet shrink below the load until it builds up.
        allowed = c.backlog_allowance * rate * c.target_wait_s
        if c.backlog_allowance > 0:
            steady_slots = min(steady_slots, load)
        drain_time = c.drain_time_s or (c.target_wait_s + c.boot_time_s)
        drain_slots = max(-load, projected - allowed) * service / drain_time
        need = max(0.0, (steady_slots + drain_slots) / slots)
        # Hysteresis: a scale-up needs the need to pass the fleet by up_tolerance servers, a
        # scale-down must free more than down_tolerance of it (at least half a server), or a
        # fleet that is just right flaps by one server around the noise of the estimates.
        wanted = math.ceil(need - (c.up_tolerance if need > 1 else 0.0) - 1e-9)
        if wanted < 1 and (load > 0 or total > 0):
            wanted = 1  # any work at all needs a server
        keep = math.ceil(need + max(0.5, c.down_tolerance * need) - 1e-9) if need > 0 else 0

        # Idle tracking, scale to zero and activation.
        idle_since = state.idle_since
        if total == 0:
            idle_since = obs.now if idle_since is None else idle_since
        else:
            idle_since = None
        # With min_size 0 and idle_to_zero_s set, one server stays until the queue has been
        # empty that long; with idle_to_zero_s unset, min_size alone is the floor.
        sleeps = c.min_size == 0 and c.idle_to_zero_s is not None
        floor = max(c.min_size, 1) if sleeps else c.min_size
        zero = (sleeps and idle_since is not None and obs.now - idle_since >= c.idle_to_zero_s)
        if zero:
            floor = 0
            wanted = keep = 0  # empty that long: what is left of the rate average is not load
        if sleeps and current == 0 and total < c.activation_backlog:
            floor = 0  # asleep and not enough work to wake up
            wanted = keep = 0
        wanted = max(floor, min(c.max_size, wanted))
        keep = max(wanted, min(c.max_size, keep))

        # Scale-down stabilisation: the highest wish of the window decides.
        recs = tuple((t, n) for t, n in state.recommendations
                     if obs.now - t < c.scale_down_window_s) + ((obs.now, keep),)
        watching_since = obs.now if state.watching_since is None else state.watching_since
        if zero and wanted == 0:
            stable = 0
            recs = ((obs.now, 0),)
        elif obs.now - watching_since < c.scale_down_window_s:
            stable = max(current, wanted)  # not watched a full window yet: no scale-down
        else:
            stable = max(n for _, n in recs)

        est = {"arrival_rate": rate, "service_time_s": service, "load_slots": load,
               "steady_slots": steady_slots, "projected_backlog": projected, "wanted": wanted}
        # A server removed comes back only after a boot: within that long of a scale-down,
        # growing again needs a real backlog beyond the allowance.
        just_down = (state.last_down_at is not None and obs.now - state.last_down_at
                     <= max(c.scale_down_window_s, c.boot_time_s))
        if wanted > current and just_down and current > 0 and free <= allowed:
            # The wish to grow again is the noise of the estimates, not load: growing would flap.
            desired = current
            reason = (f"hold: need {wanted} but scaled down {obs.now - state.last_down_at:.0f}s "
                      f"ago and backlog {free} is within the allowance {allowed:.0f}")
        elif wanted > current:
            desired = min(wanted, current + c.max_step_up)
            reason = (f"up: need {wanted} for {rate:.2f} msg/s x {service:.2f}s and backlog "
                      f"{free} (projected {projected:.0f} after boot) within {c.target_wait_s:g}s")
        elif stable < current:
            desired = max(stable, current - c.max_step_down)
            if zero and desired == 0:
                reason = f"down to zero: queue empty for {obs.now - idle_since:.0f}s"
            else:
                reason = (f"down: highest need over {c.scale_down_window_s:g}s is {stable} "
                          f"({rate:.2f} msg/s, backlog {free})")
        else:
            desired = current
            reason = (f"hold: need {wanted}, {stable} over the down window; "
                      f"{rate:.2f} msg/s, backlog {free}, {pending} booting")
        if current == 0 and desired == 0 and total > 0:
            reason = f"hold at zero: backlog {total} below activation {c.activation_backlog}"
        new = PolicyState(
            last_now=obs.now, last_total=total, last_claimed=claimed, last_free=free,
            last_up_at=obs.now if desired > current else state.last_up_at,
            last_action_at=obs.now if desired != current else state.last_action_at,
            last_down_at=obs.now if desired < current else state.last_down_at,
            arrival_rate=rate, service_time=service, idle_since=idle_since,
            recommendations=recs, watching_since=watching_since)
        return Decision(desired, reason, new, current, est)


POLICIES = {"threshold": (ThresholdPolicy, ThresholdConfig), "target": (TargetPolicy, TargetConfig)}


def make_policy(name: str, **options: Any) -> Policy:
    """Build a policy by name (``threshold`` or ``target``) from config keyword options."""
    if name not in POLICIES:
        raise PolicyConfigError("policy", name, f"one of {', '.join(sorted(POLICIES))}")
    cls, cfg = POLICIES[name]
    known = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise PolicyConfigError(unknown[0], options[unknown[0]],
                                f"an option of the {name} policy ({', '.join(sorted(known))})")
    return cls(cfg(**options))

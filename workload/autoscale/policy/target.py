"""The ``target`` policy: sizes the group for a target wait (see the package docstring)."""

from __future__ import annotations

import dataclasses
import math

from workload.autoscale.policy.base import (
    MAX_SIZE,
    MIN_SIZE,
    Bounds,
    Decision,
    Guarded,
    Observation,
    PolicyConfigError,
    PolicyState,
)
from workload.autoscale.policy.erlang import erlang_c_servers
from workload.queues.base import QueueStats
from workload.settings import check_fields, setting


@dataclasses.dataclass(frozen=True)
class TargetConfig(Bounds):
    """Options of the target-wait policy.

    ``min_size`` 0 with ``idle_to_zero_s`` set: at least one server while there is work, none
    after the queue has been empty ``idle_to_zero_s`` seconds, woken by ``activation_backlog``
    messages. ``min_size`` 0 without it: none as soon as the estimated load is nil for a whole
    ``scale_down_window_s``. ``min_size`` above 0: never fewer.
    """

    min_size: int = setting(0, **MIN_SIZE)
    max_size: int = setting(20, **MAX_SIZE)
    target_wait_s: float = setting(
        30.0,
        "seconds from post to start of processing to keep under, at --wait-quantile",
        flags=("--target-wait",),
        env=("QW_TARGET_WAIT",),
        kind=float,
        lo=0.1,
        hi=86400,
        stack="targetWait",
    )
    wait_quantile: float = setting(
        0.95,
        "share of messages that should start within --target-wait",
        flags=("--wait-quantile",),
        env=("QW_WAIT_QUANTILE",),
        kind=float,
        lo=0.5,
        hi=0.999,
        stack="waitQuantile",
    )
    boot_time_s: float = setting(
        60.0,
        "seconds from asking for a server to it consuming (err on the slow side)",
        flags=("--boot-time",),
        env=("QW_BOOT_TIME",),
        kind=float,
        lo=0,
        hi=3600,
        stack="bootTime",
    )
    service_time_s: float = setting(
        1.0,
        "first estimate of seconds one message takes; looks with a backlog correct it (err on the slow side)",
        flags=("--service-time",),
        env=("QW_SERVICE_TIME",),
        kind=float,
        lo=0.001,
        hi=86400,
        stack="serviceTime",
    )
    worker_concurrency: int = setting(
        1,
        "messages one consumer server handles at once (its -w)",
        flags=("--worker-concurrency",),
        env=("QW_WORKER_CONCURRENCY",),
        kind=int,
        lo=1,
        hi=1000,
        stack="consumerConcurrency",
    )
    max_step_up: int = setting(
        10,
        "most servers added by one decision",
        flags=("--max-step-up",),
        env=("QW_MAX_STEP_UP",),
        kind=int,
        lo=1,
        hi=10000,
        stack="maxStepUp",
    )
    max_step_down: int = setting(
        10,
        "most servers removed by one decision",
        flags=("--max-step-down",),
        env=("QW_MAX_STEP_DOWN",),
        kind=int,
        lo=1,
        hi=10000,
        stack="maxStepDown",
    )
    scale_down_window_s: float = setting(
        30.0,
        "scale down only to the highest need seen over this many seconds",
        flags=("--down-window",),
        env=("QW_DOWN_WINDOW",),
        kind=float,
        lo=0,
        hi=86400,
        stack="downWindow",
    )
    idle_to_zero_s: float | None = setting(
        120.0,
        "with -m 0: seconds of empty queue before scaling to zero ('never': zero as soon as the "
        "load is nil for a --down-window)",
        flags=("--idle-to-zero",),
        env=("QW_IDLE_TO_ZERO",),
        kind=float,
        lo=0,
        hi=86400 * 7,
        none_word="never",
        stack="idleToZero",
    )
    activation_backlog: int = setting(
        1,
        "messages waiting that wake a group scaled to zero",
        flags=("--activation",),
        env=("QW_ACTIVATION",),
        kind=int,
        lo=1,
        hi=10**9,
        stack="activation",
    )
    rate_smoothing_s: float = setting(
        30.0,
        "time constant in seconds of the arrival-rate average",
        flags=("--rate-smoothing",),
        env=("QW_RATE_SMOOTHING",),
        kind=float,
        lo=0,
        hi=3600,
        stack="rateSmoothing",
    )
    up_tolerance: float = setting(  # servers the need must pass the fleet by before one is added
        0.5, "servers the need must pass the fleet by before one is added", kind=float, lo=0, hi=0.99
    )
    down_tolerance: float = (
        setting(  # scale down only when the need is this share (at least half a server) below
            0.1,
            "share of the need (at least half a server) it must fall below the fleet to scale down",
            kind=float,
            lo=0,
            hi=1,
        )
    )
    backlog_allowance: float = setting(
        0.5,
        "share of (arrival rate x --target-wait) left queued on purpose so servers stay busy",
        flags=("--backlog-allowance",),
        env=("QW_BACKLOG_ALLOWANCE",),
        kind=float,
        lo=0,
        hi=1,
        stack="backlogAllowance",
    )
    backlog_clear_s: float | None = setting(
        None,
        "seconds to clear a backlog beyond the allowance in (unset: target wait + boot time)",
        flags=("--backlog-clear-time",),
        env=("QW_BACKLOG_CLEAR_TIME",),
        kind=float,
        lo=1,
        hi=86400,
        optional=True,
        stack="backlogClearTime",
    )

    def validate(self) -> TargetConfig:
        check_fields(self, PolicyConfigError)
        self._validate_bounds()
        if self.max_size < 1:
            raise PolicyConfigError("max_size", self.max_size, "at least 1 for the target policy")
        return self


# How the service time is learnt from looks with a backlog (see :meth:`TargetPolicy.estimate`):
# it is a property of the work, so it is averaged over SERVICE_SMOOTHING_X rate time constants
# (one look's reading is noisy); readings are averaged in proportion (a reading twice the
# estimate and one half of it move it equally far); one reading moves it at most SLOWER_READING_X
# slower, 2x faster. The reading rests on the oldest message's age, which includes that message's
# own service so far: when a long message is the oldest the work reads slower than it is (with a
# service cv of 1.5 this alone kept the estimate 3-4x too slow, and the fleet 1.4x too large).
SERVICE_SMOOTHING_X = 4.0
SLOWER_READING_X = 1.25

Window = tuple[tuple[float, int], ...]  # (time, servers wanted) inside the down window


@dataclasses.dataclass(frozen=True)
class Look:
    """What one observation says once cleaned, and the estimates made from it (one step each)."""

    now: float
    current: int
    booting: int
    free: int
    claimed: int
    oldest_age: float | None = None
    rate: float = 0.0  # arrivals per second, smoothed
    service: float = 1.0  # seconds per message per slot
    steady_slots: float = 0.0  # slots that carry the load
    projected: float = 0.0  # backlog when a server asked for now would be ready
    allowed: float = 0.0  # backlog left standing on purpose
    wanted: int = 0  # servers wanted now (scale-up side of the hysteresis)
    keep: int = 0  # servers worth keeping (scale-down side)
    zero: bool = False  # the queue has been idle long enough to sleep
    idle_since: float | None = None

    @property
    def total(self) -> int:
        return self.free + self.claimed

    @property
    def active(self) -> int:
        return self.current - self.booting

    @property
    def load(self) -> float:
        return self.rate * self.service


class TargetPolicy(Guarded):
    """Sizes the group for a target wait from backlog, arrival rate, throughput and boot time.

    One decision is five steps, each a method: :meth:`estimate` (arrival rate and service time),
    :meth:`size` (the servers the load and the backlog need), :meth:`floor` (scale to zero, wake
    up, bounds), :meth:`stabilise` (the down window) and :meth:`explain` (the desired size and
    why); :meth:`remember` makes the next state.
    """

    name = "target"
    config: TargetConfig

    def _decide(self, obs: Observation, stats: QueueStats, current: int, state: PolicyState) -> Decision:
        look = Look(
            obs.now,
            current,
            max(0, min(obs.booting, current)),
            max(0, stats.free),
            max(0, stats.claimed),
            stats.oldest_age,
        )
        look = self.floor(state, self.size(self.estimate(look, state)))
        stable, recs, watching_since = self.stabilise(look, state)
        desired, reason = self.explain(look, state, stable)
        est = {
            "arrival_rate": look.rate,
            "service_time_s": look.service,
            "load_slots": look.load,
            "steady_slots": look.steady_slots,
            "projected_backlog": look.projected,
            "wanted": look.wanted,
        }
        return Decision(
            desired, reason, self.remember(look, state, desired, recs, watching_since), look.current, est
        )

    def estimate(self, look: Look, state: PolicyState) -> Look:
        """The arrival rate from the stats delta, and the service time looks with a backlog correct.

        Arrivals = growth + completions, and completions follow from the messages in flight by
        Little's law (in flight = rate x service time).
        """
        c = self.config
        free, claimed, total = look.free, look.claimed, look.total
        service = state.service_time or c.service_time_s
        rate = state.arrival_rate
        dt = None if state.last_now is None else look.now - state.last_now
        if dt is not None and dt > 0 and state.last_total is not None:
            in_flight = (claimed + (state.last_claimed or 0)) / 2
            growth = (total - state.last_total) / dt
            saturated = free > 0 and (state.last_free or 0) > 0 and look.active > 0 and in_flight > 0
            observed = self.backlog_service(look, service, in_flight, growth) if saturated else None
            if observed is not None:
                w = 1 - math.exp(-dt / max(SERVICE_SMOOTHING_X * c.rate_smoothing_s, 1e-9))
                service = service * (observed / service) ** w
            inst = max(0.0, growth + in_flight / service)
            if rate is None:
                rate = inst
            else:
                tau = c.rate_smoothing_s
                w = 1.0 if tau == 0 else 1 - math.exp(-dt / tau)
                rate = rate + w * (inst - rate)
        if rate is None:
            rate = claimed / service  # first look: what is in flight is what is arriving
        if total == 0 and rate * service < 0.05:
            rate = 0.0  # what is left of the average after the queue emptied is not load
        return dataclasses.replace(look, rate=rate, service=service)

    @staticmethod
    def backlog_service(look: Look, service: float, in_flight: float, growth: float) -> float | None:
        """The service time a saturated look shows (faster or slower than ``service``), or None.

        With a backlog every slot is busy, so by Little's law the service time is the messages in
        flight over the completion rate, and completions = arrivals - growth. The arrivals are
        those of the waiting line: its ``free`` messages came in over the head's wait, which is
        the oldest age less the oldest one's service so far (about one ``service``). Idle looks
        say nothing and change nothing; one reading is at most 2x faster or SLOWER_READING_X
        slower than ``service`` (the oldest may be a long message in flight, which reads slow).
        """
        age = look.oldest_age
        if age is None or look.free < max(1.0, in_flight):
            return None  # a backlog shorter than the fleet: the oldest age is a service, not a wait
        head_wait = age - service
        if head_wait <= service:
            return None
        completions = look.free / head_wait - growth
        if completions <= 0:
            return None
        return min(SLOWER_READING_X * service, max(service / 2, in_flight / completions))

    def size(self, look: Look) -> Look:
        """Servers for the offered load plus the backlog projected to when a new one is ready.

        A backlog the fleet clears within part of the target wait may stand (the fleet then runs
        busy, not waiting for work); more than that is cleared within backlog_clear_s (by default a
        boot plus a target wait: a faster clearing buys little and costs much), less than that lets
        the fleet shrink below the load until it builds up.
        """
        c, load, service, rate = self.config, look.load, look.service, look.rate
        slots = c.worker_concurrency
        steady_slots = erlang_c_servers(
            load, service, c.target_wait_s, c.wait_quantile, limit=c.max_size * slots + 1
        )
        capacity_rate = look.active * slots / service
        projected = look.free + max(0.0, rate - capacity_rate) * c.boot_time_s
        allowed = c.backlog_allowance * rate * c.target_wait_s
        clear_time = c.backlog_clear_s or (c.target_wait_s + c.boot_time_s)
        clear_slots = max(-load, projected - allowed) * service / clear_time
        need = max(0.0, (steady_slots + clear_slots) / slots)
        # Hysteresis: a scale-up needs the need to pass the fleet by up_tolerance servers, a
        # scale-down must free more than down_tolerance of it (at least half a server), or a
        # fleet that is just right flaps by one server around the noise of the estimates. The
        # 10 % down tolerance (the HPA's) keeps a fleet the rate's noise would shrink by one: in
        # the benchmark it lowered the p95 of bursts with a 180 s boot (228 -> 218 s on spike)
        # for 1-2 % more cost on diurnal.
        wanted = math.ceil(need - (c.up_tolerance if need > 1 else 0.0) - 1e-9)
        if wanted < 1 and (load > 0 or look.total > 0):
            wanted = 1  # any work at all needs a server
        keep = math.ceil(need + max(0.5, c.down_tolerance * need) - 1e-9) if need > 0 else 0
        return dataclasses.replace(
            look, steady_slots=steady_slots, projected=projected, allowed=allowed, wanted=wanted, keep=keep
        )

    def floor(self, state: PolicyState, look: Look) -> Look:
        """Idle tracking, scale to zero, activation, and the bounds.

        With min_size 0 and idle_to_zero_s set, one server stays until the queue has been empty
        that long; with idle_to_zero_s unset, min_size alone is the floor.
        """
        c, wanted, keep = self.config, look.wanted, look.keep
        idle_since = None
        if look.total == 0:
            idle_since = look.now if state.idle_since is None else state.idle_since
        idle_to_zero = c.idle_to_zero_s
        sleeps = c.min_size == 0 and idle_to_zero is not None
        floor = max(c.min_size, 1) if sleeps else c.min_size
        zero = (
            idle_to_zero is not None
            and sleeps
            and idle_since is not None
            and look.now - idle_since >= idle_to_zero
        )
        if zero:
            floor = 0
            wanted = keep = 0  # empty that long: what is left of the rate average is not load
        if sleeps and look.current == 0 and look.total < c.activation_backlog:
            floor = 0  # asleep and not enough work to wake up
            wanted = keep = 0
        wanted = max(floor, min(c.max_size, wanted))
        keep = max(wanted, min(c.max_size, keep))
        return dataclasses.replace(look, wanted=wanted, keep=keep, zero=zero, idle_since=idle_since)

    def stabilise(self, look: Look, state: PolicyState) -> tuple[int, Window, float]:
        """Scale-down stabilisation: the highest wish of the down window decides, and nothing is
        removed before a whole window was watched. Returns (stable size, window, watching since)."""
        c, now = self.config, look.now
        recs = tuple((t, n) for t, n in state.recommendations if now - t < c.scale_down_window_s) + (
            (now, look.keep),
        )
        watching_since = now if state.watching_since is None else state.watching_since
        if look.zero and look.wanted == 0:
            return 0, ((now, 0),), watching_since
        if now - watching_since < c.scale_down_window_s:
            return max(look.current, look.wanted), recs, watching_since
        return max(n for _, n in recs), recs, watching_since

    def explain(self, look: Look, state: PolicyState, stable: int) -> tuple[int, str]:
        """The desired size and the reason in words."""
        c, current, wanted, free = self.config, look.current, look.wanted, look.free
        rate, service, now = look.rate, look.service, look.now
        # A server removed comes back only after a boot: within that long of a scale-down,
        # growing again needs a real backlog beyond the allowance.
        since_down = math.inf if state.last_down_at is None else now - state.last_down_at
        just_down = since_down <= max(c.scale_down_window_s, c.boot_time_s)
        if wanted > current and just_down and current > 0 and free <= look.allowed:
            # The wish to grow again is the noise of the estimates, not load: growing would flap.
            desired = current
            reason = (
                f"hold: need {wanted} but scaled down {since_down:.0f}s "
                f"ago and backlog {free} is within the allowance {look.allowed:.0f}"
            )
        elif wanted > current:
            desired = min(wanted, current + c.max_step_up)
            reason = (
                f"up: need {wanted} for {rate:.2f} msg/s x {service:.2f}s and backlog "
                f"{free} (projected {look.projected:.0f} after boot) within {c.target_wait_s:g}s"
            )
        elif stable < current:
            desired = max(stable, current - c.max_step_down)
            if look.zero and desired == 0 and look.idle_since is not None:
                reason = f"down to zero: queue empty for {now - look.idle_since:.0f}s"
            else:
                reason = (
                    f"down: highest need over {c.scale_down_window_s:g}s is {stable} "
                    f"({rate:.2f} msg/s, backlog {free})"
                )
        else:
            desired = current
            reason = (
                f"hold: need {wanted}, {stable} over the down window; "
                f"{rate:.2f} msg/s, backlog {free}, {look.booting} booting"
            )
        if current == 0 and desired == 0 and look.total > 0:
            reason = f"hold at zero: backlog {look.total} below activation {c.activation_backlog}"
        return desired, reason

    @staticmethod
    def remember(
        look: Look, state: PolicyState, desired: int, recs: Window, watching_since: float
    ) -> PolicyState:
        """The state the next decision starts from."""
        now, current = look.now, look.current
        return PolicyState(
            last_now=now,
            last_total=look.total,
            last_claimed=look.claimed,
            last_free=look.free,
            last_up_at=now if desired > current else state.last_up_at,
            last_action_at=now if desired != current else state.last_action_at,
            last_down_at=now if desired < current else state.last_down_at,
            arrival_rate=look.rate,
            service_time=look.service,
            idle_since=look.idle_since,
            recommendations=recs,
            watching_since=watching_since,
        )

"""Autoscaling benchmark: a discrete-event simulation that drives the real policy code.

    python -m bench.autoscale [--json] [--trace FILE.csv] [--out DIR] [--seed N]

A fleet of servers consumes a FIFO queue. A server asked for at time t costs from t and starts
consuming at t + boot time; each message takes a service time drawn from a log-normal
distribution; arrivals are a Poisson process whose rate follows a trace (piecewise constant,
``t_seconds,arrivals_per_s`` rows, the last row's time is the trace's end). Every policy sees
only what the real monitor sees: the queue's free / claimed / total / oldest age and the group's
size and how many are booting.

Policies: ``ours`` (workload.autoscale.policy.TargetPolicy, one configuration for every trace),
``threshold`` (the seed's monitor, the same code the real monitor runs with -j/-n/-c), ``keda``
(ceil(queue / target) with HPA's 300 s down-stabilisation and KEDA's scale to zero), ``aws``
(backlog-per-instance target tracking with instance warm-up) and ``clairvoyant`` (knows the
arrival rate ahead and provisions with the boot lead time: a lower bound on the cost of meeting
the target, not a policy anyone can run). The baselines' parameters are set the way their own
documentation recommends for the same target wait, and printed.

Wait = from a message's arrival to the start of its processing. A policy meets the target when
its p95 wait is at most the target. Output: a table, the ratios, a PNG per trace (queue depth
and workers over time per policy) and, with ``--json``, one JSON object on the last line.
"""
from __future__ import annotations

import abc
import argparse
import bisect
import collections
import csv
import dataclasses
import heapq
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable

from workload.autoscale.policy import (
    Observation, PolicyState, TargetConfig, TargetPolicy, ThresholdConfig, ThresholdPolicy,
    erlang_c_servers,
)
from workload.queues.base import QueueStats

HERE = Path(__file__).resolve().parent
TRACES_DIR = HERE / "traces"
BUILTIN_TRACES = ("step", "spike", "diurnal", "onoff", "idle_to_zero")
POLICY_NAMES = ("ours", "threshold", "keda", "aws", "clairvoyant")

# The world every policy is measured in (one set of numbers for every trace).
TARGET_WAIT_S = 30.0
BOOT_TIME_S = 60.0
SERVICE_MEAN_S = 1.0
SERVICE_SIGMA = 0.6  # log-normal shape: coefficient of variation about 0.66
MAX_SERVERS = 60
TICK_S = 5.0  # simulation sampling grid; every policy's poll interval is a multiple of it
DRAIN_LIMIT_S = 1800.0  # after the trace ends, run on until the queue is empty, at most this long


# ---------------------------------------------------------------------------- traces

@dataclasses.dataclass(frozen=True)
class Trace:
    """A piecewise-constant arrival rate: ``rates[i]`` holds from ``times[i]`` to ``times[i+1]``."""

    name: str
    times: tuple[float, ...]
    rates: tuple[float, ...]

    @property
    def end(self) -> float:
        return self.times[-1]

    def rate_at(self, t: float) -> float:
        if t < 0 or t >= self.end:
            return 0.0
        return self.rates[bisect.bisect_right(self.times, t) - 1]

    def max_rate(self, t0: float, t1: float) -> float:
        """Highest rate over [t0, t1]."""
        i = max(0, bisect.bisect_right(self.times, t0) - 1)
        best = self.rate_at(t0)
        while i + 1 < len(self.times) and self.times[i + 1] <= t1:
            i += 1
            best = max(best, self.rate_at(self.times[i]))
        return best

    def arrivals(self, rng: random.Random) -> list[float]:
        """Poisson arrival times following the rate, in order."""
        out: list[float] = []
        for i in range(len(self.times) - 1):
            t, t_end, rate = self.times[i], self.times[i + 1], self.rates[i]
            if rate <= 0:
                continue
            while True:
                t += rng.expovariate(rate)
                if t >= t_end:
                    break
                out.append(t)
        return out


def load_trace(path: str | os.PathLike) -> Trace:
    """Read a ``t_seconds,arrivals_per_s`` CSV; errors name the file, the row and the value."""
    path = Path(path)
    times, rates = [], []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty trace; expected rows of t_seconds,arrivals_per_s")
    start = 1 if rows[0] and rows[0][0].strip().lower().startswith("t") else 0
    for n, row in enumerate(rows[start:], start=start + 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise ValueError(f"{path}:{n}: expected 2 columns t_seconds,arrivals_per_s, got {row!r}")
        try:
            t, r = float(row[0]), float(row[1])
        except ValueError:
            raise ValueError(f"{path}:{n}: not numbers: {row!r}") from None
        if not (math.isfinite(t) and math.isfinite(r)) or r < 0:
            raise ValueError(f"{path}:{n}: arrivals_per_s={row[1]!r} must be a number >= 0")
        if times and t <= times[-1]:
            raise ValueError(f"{path}:{n}: t_seconds={row[0]!r} must be after {times[-1]:g}")
        times.append(t)
        rates.append(r)
    if len(times) < 2 or times[0] != 0:
        raise ValueError(f"{path}: need at least two rows, the first at t_seconds=0")
    return Trace(path.stem, tuple(times), tuple(rates))


# ---------------------------------------------------------------------------- the fleet

@dataclasses.dataclass
class Server:
    id: int
    asked_at: float
    ready_at: float
    busy_until: float = 0.0
    msg_arrival: float | None = None  # arrival time of the message it is processing


class Fleet:
    """A FIFO queue and a group of servers, advanced event by event."""

    def __init__(self, arrivals: list[float], service: Callable[[], float], boot_s: float):
        self.arrivals = arrivals
        self.i = 0  # next arrival not yet in the queue
        self.queue: collections.deque[float] = collections.deque()
        self.service = service
        self.boot_s = boot_s
        self.servers: dict[int, Server] = {}
        self.heap: list[tuple[float, int]] = []  # (available from, server id) of servers in the group
        self.retiring: list[Server] = []  # removed while busy: finish the message, then stop
        self.next_id = 0
        self.cost = 0.0
        self.waits: list[float] = []
        self.starts: list[tuple[float, float]] = []  # (arrival, start)
        self.actions = 0

    # -- events
    def advance(self, t_end: float) -> None:
        """Process arrivals and starts up to ``t_end``."""
        arrivals, n = self.arrivals, len(self.arrivals)
        queue, heap, servers = self.queue, self.heap, self.servers
        while True:
            na = arrivals[self.i] if self.i < n else math.inf
            ns = max(heap[0][0], queue[0]) if queue and heap else math.inf
            if ns <= na and ns <= t_end:
                free_at, sid = heapq.heappop(heap)
                arrival = queue.popleft()
                s = servers[sid]
                s.msg_arrival = arrival
                s.busy_until = ns + self.service()
                self.waits.append(ns - arrival)
                self.starts.append((arrival, ns))
                heapq.heappush(heap, (s.busy_until, sid))
            elif na <= t_end:
                queue.append(na)
                self.i += 1
            else:
                break

    # -- what the monitor sees
    def observe(self, t: float) -> Observation:
        in_flight = [s.msg_arrival for s in self.servers.values()
                     if s.msg_arrival is not None and s.busy_until > t]
        in_flight += [s.msg_arrival for s in self.retiring if s.busy_until > t]
        free = len(self.queue)
        oldest = min(in_flight + ([self.queue[0]] if self.queue else []), default=None)
        stats = QueueStats(free=free, claimed=len(in_flight), total=free + len(in_flight),
                           oldest_age=None if oldest is None else t - oldest)
        pending = sum(1 for s in self.servers.values() if s.ready_at > t)
        return Observation(now=t, stats=stats, current=len(self.servers), pending=pending)

    def ready(self, t: float) -> int:
        return sum(1 for s in self.servers.values() if s.ready_at <= t)

    # -- actions
    def resize(self, desired: int, t: float) -> None:
        desired = max(0, min(MAX_SERVERS, desired))
        cur = len(self.servers)
        if desired == cur:
            return
        self.actions += 1
        if desired > cur:
            for _ in range(desired - cur):
                s = Server(self.next_id, t, t + self.boot_s)
                self.next_id += 1
                self.servers[s.id] = s
                heapq.heappush(self.heap, (s.ready_at, s.id))
            return
        # Scale in: idle ready servers first, then booting ones, then busy ones (they finish).
        def order(s: Server) -> tuple[int, float]:
            if s.ready_at > t:
                return (1, -s.ready_at)
            if s.busy_until <= t:
                return (0, 0.0)
            return (2, s.busy_until)
        victims = sorted(self.servers.values(), key=order)[:cur - desired]
        for s in victims:
            del self.servers[s.id]
            if s.ready_at <= t < s.busy_until:
                self.retiring.append(s)
            else:
                self.cost += t - s.asked_at
        gone = {s.id for s in victims}
        self.heap = [(a, i) for a, i in self.heap if i not in gone]
        heapq.heapify(self.heap)

    def settle(self, t: float) -> None:
        """Charge retiring servers whose message finished by ``t``."""
        keep = []
        for s in self.retiring:
            if s.busy_until <= t:
                self.cost += s.busy_until - s.asked_at
            else:
                keep.append(s)
        self.retiring = keep

    def close(self, t: float) -> None:
        for s in self.servers.values():
            self.cost += t - s.asked_at
        for s in self.retiring:
            self.cost += max(t, s.busy_until) - s.asked_at
        self.servers.clear()
        self.retiring = []

    def idle(self) -> bool:
        return self.i >= len(self.arrivals) and not self.queue


# ---------------------------------------------------------------------------- policies

class Sim(abc.ABC):
    """A policy as the simulation drives it: a poll interval and ``decide(obs) -> desired``."""

    name = ""
    poll_s = 15.0

    def params(self) -> dict:
        return {}

    @abc.abstractmethod
    def decide(self, obs: Observation) -> int:
        """The desired number of servers after this look."""


SERVICE_PRIOR_S = SERVICE_MEAN_S  # ours' first estimate of the service time (--service-prior)


def ours_config() -> TargetConfig:
    """The one configuration of ours used for every trace (the monitor's defaults, bench world)."""
    return TargetConfig(min_size=0, max_size=MAX_SERVERS, target_wait_s=TARGET_WAIT_S,
                        boot_time_s=BOOT_TIME_S, service_time_s=SERVICE_PRIOR_S)


class Ours(Sim):
    name = "ours"
    poll_s = 15.0

    def __init__(self):
        self.policy = TargetPolicy(ours_config())
        self.state = PolicyState()

    def params(self) -> dict:
        return {"poll_s": self.poll_s, **dataclasses.asdict(self.policy.config)}

    def decide(self, obs):
        d = self.policy.decide(obs, self.state)
        self.state = d.state
        return d.desired


class Threshold(Sim):
    """The seed's monitor (the real ThresholdPolicy). Its README: -m 0 -j 100 -n 0, cooldown 60 s.
    For the same target, -j is the backlog one server clears within the target wait."""

    name = "threshold"
    poll_s = 15.0

    def __init__(self):
        self.policy = ThresholdPolicy(ThresholdConfig(
            min_size=0, max_size=MAX_SERVERS, scale_up_threshold=round(TARGET_WAIT_S / SERVICE_MEAN_S),
            scale_down_threshold=0, step=1, up_cooldown_s=60, down_cooldown_s=60))
        self.state = PolicyState()

    def params(self):
        return {"poll_s": self.poll_s, **dataclasses.asdict(self.policy.config)}

    def decide(self, obs):
        d = self.policy.decide(obs, self.state)
        self.state = d.state
        return d.desired


class Keda(Sim):
    """KEDA queue scaler + HPA. Docs: queueLength = messages one replica handles (here within the
    target wait), in-flight messages counted, pollingInterval 30 s, HPA sync 15 s with 10%
    tolerance, scale-up at most max(4 pods, 100%) per 15 s, scale-down stabilisation 300 s,
    minReplicaCount 0, activationQueueLength 0, cooldownPeriod 300 s before scaling to zero."""

    name = "keda"
    poll_s = 15.0

    def __init__(self):
        self.target = TARGET_WAIT_S / SERVICE_MEAN_S
        self.recs: list[tuple[float, int]] = []
        self.last_active: float | None = None
        self.last_poll = -math.inf
        self.metric = 0

    def params(self):
        return {"queueLength": self.target, "scaleOnInFlight": True, "pollingInterval_s": 30,
                "hpa_sync_s": self.poll_s, "tolerance": 0.1, "scaleUp": "max(4 pods, 100%)/15s",
                "stabilizationWindowSeconds_down": 300, "minReplicaCount": 0,
                "activationQueueLength": 0, "cooldownPeriod_s": 300}

    def decide(self, obs):
        t, cur = obs.now, obs.current
        if t - self.last_poll >= 30:  # KEDA's metrics are polled every 30 s
            self.metric = obs.stats.total
            self.last_poll = t
        q = self.metric
        if q > 0:
            self.last_active = t
        if cur == 0:
            return 1 if q > 0 else 0
        if q == 0 and self.last_active is not None and t - self.last_active >= 300:
            self.recs.clear()
            return 0
        want = math.ceil(q / self.target)
        if abs(q / (self.target * cur) - 1) <= 0.1:
            want = cur
        want = max(1, min(MAX_SERVERS, want))
        self.recs = [(tt, n) for tt, n in self.recs if t - tt < 300] + [(t, want)]
        if want > cur:
            return min(want, cur + max(4, cur))
        return min(cur, max(n for _, n in self.recs))


class Aws(Sim):
    """AWS target tracking on backlog per instance. Docs: acceptable backlog per instance =
    acceptable latency / average processing time; 1-minute metric (visible messages / InService
    instances); scale-out alarm 3 of 3 datapoints above target, scale-in alarm 15 of 15 below
    90% of target; instance warm-up = boot time (warming instances neither count in the metric
    nor get added again); scale-in more gradual than scale-out (here at most 10% a minute while
    the scale-in alarm holds); min capacity 1 (the metric divides by instances)."""

    name = "aws"
    poll_s = 60.0

    def __init__(self):
        self.target = TARGET_WAIT_S / SERVICE_MEAN_S
        self.history: list[float] = []

    def params(self):
        return {"target_backlog_per_instance": self.target, "metric_period_s": 60,
                "scale_out_datapoints": 3, "scale_in_datapoints": 15, "scale_in_below": 0.9,
                "scale_in_step": "10% (at least 1) per minute while in alarm",
                "instance_warmup_s": BOOT_TIME_S, "min_capacity": 1}

    def decide(self, obs):
        cur, warming = obs.current, obs.pending
        in_service = max(1, cur - warming)
        metric = obs.stats.free / in_service
        self.history = (self.history + [metric])[-15:]
        want = math.ceil(in_service * metric / self.target)
        if len(self.history) >= 3 and all(m > self.target for m in self.history[-3:]):
            return max(cur, min(MAX_SERVERS, want + warming))
        if len(self.history) >= 15 and all(m < 0.9 * self.target for m in self.history) and not warming:
            # "More aggressive in adding capacity than in removing it": while the scale-in
            # alarm holds, remove at most 10% (at least one) per minute.
            return max(1, want, cur - max(1, cur // 10))
        return max(1, cur)


class Clairvoyant(Sim):
    """Knows the arrival rate ahead: at t it keeps the fleet the Erlang-C sizing asks for at
    any time before a server asked for now would be ready (t .. t + boot + poll)."""

    name = "clairvoyant"
    poll_s = 5.0

    def __init__(self, trace: Trace):
        self.trace = trace

    def params(self):
        return {"lead_s": BOOT_TIME_S + self.poll_s, "sizing": "Erlang C, p95 wait <= target, true mean service time"}

    def need(self, rate: float) -> int:
        return erlang_c_servers(rate * SERVICE_MEAN_S, SERVICE_MEAN_S, TARGET_WAIT_S, 0.95)

    def decide(self, obs):
        t = obs.now
        return min(MAX_SERVERS, self.need(self.trace.max_rate(t, t + BOOT_TIME_S + self.poll_s)))


def make_sims(trace: Trace) -> list[Sim]:
    return [Ours(), Threshold(), Keda(), Aws(), Clairvoyant(trace)]


# ---------------------------------------------------------------------------- running

def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def over_target(starts: list[tuple[float, float]], target: float) -> float:
    """Seconds during which some waiting message was older than the target (union of intervals)."""
    total, cur_a, cur_b = 0.0, None, None
    for arrival, start in starts:  # FIFO: intervals come in order of their beginning
        if start - arrival <= target:
            continue
        a, b = arrival + target, start
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a
    return total


def simulate(trace: Trace, sim: Sim, seed: int) -> tuple[dict, dict]:
    """Run one policy on one trace; return its figures and its time series for the plot."""
    rng = random.Random(f"{seed}:{trace.name}")  # same arrivals and service times for every policy
    arrivals = trace.arrivals(rng)
    srng = random.Random(f"{seed}:{trace.name}:service")
    mu = math.log(SERVICE_MEAN_S) - SERVICE_SIGMA ** 2 / 2
    fleet = Fleet(arrivals, lambda: srng.lognormvariate(mu, SERVICE_SIGMA), BOOT_TIME_S)
    # Every policy starts from the fleet the steady load at t=0 needs, already booted.
    start = erlang_c_servers(trace.rate_at(0) * SERVICE_MEAN_S, SERVICE_MEAN_S, TARGET_WAIT_S, 0.95)
    fleet.resize(start, -BOOT_TIME_S)
    fleet.actions = 0
    series = {"t": [], "depth": [], "workers": []}
    t, every = 0.0, max(1, round(sim.poll_s / TICK_S))
    k = 0
    while True:
        fleet.advance(t)
        fleet.settle(t)
        obs = fleet.observe(t)
        series["t"].append(t)
        series["depth"].append(obs.stats.free)
        series["workers"].append(obs.current)
        if k % every == 0:
            desired = sim.decide(obs)
            if desired is not None:
                fleet.resize(desired, t)
        if t >= trace.end and (fleet.idle() or t >= trace.end + DRAIN_LIMIT_S):
            break
        t += TICK_S
        k += 1
    unstarted = len(fleet.queue) + (len(arrivals) - fleet.i)
    fleet.close(t)
    waits = sorted(fleet.waits) + [math.inf] * unstarted
    p95 = percentile(waits, 0.95)
    figures = {
        "cost_worker_s": round(fleet.cost, 1),
        "p50_wait_s": round(percentile(waits, 0.5), 2),
        "p95_wait_s": round(p95, 2) if math.isfinite(p95) else None,
        "max_wait_s": round(waits[-1], 2) if waits and math.isfinite(waits[-1]) else None,
        "over_target_s": round(over_target(fleet.starts, TARGET_WAIT_S), 1),
        "actions": fleet.actions,
        "meets_target": math.isfinite(p95) and p95 <= TARGET_WAIT_S,
    }
    return figures, series


def plot(trace: Trace, series: dict[str, dict], out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    xs = [i for i in range(0, int(trace.end) + 1, 5)]
    ax1.plot(xs, [trace.rate_at(x) for x in xs], color="black")
    ax1.set_ylabel("arrivals/s")
    ax1.set_title(f"trace {trace.name}: boot {BOOT_TIME_S:g}s, mean service {SERVICE_MEAN_S:g}s, "
                  f"target wait {TARGET_WAIT_S:g}s")
    for name, s in series.items():
        style = {"linestyle": "--"} if name == "clairvoyant" else {}
        ax2.plot(s["t"], s["depth"], label=name, **style)
        ax3.step(s["t"], s["workers"], where="post", label=name, **style)
    ax2.set_ylabel("queue depth (free)")
    ax2.set_yscale("symlog")
    ax3.set_ylabel("workers")
    ax3.set_xlabel("seconds")
    ax3.legend(loc="upper right", ncol=5, fontsize="small")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{trace.name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def ratios(results: dict[str, dict]) -> dict:
    """Per trace: ours / cheapest baseline meeting the target, ours / clairvoyant, and the verdict."""
    out = {}
    for trace, by in results.items():
        ours = by["ours"]
        meeting = {n: f for n, f in by.items() if n not in ("ours", "clairvoyant") and f["meets_target"]}
        r: dict = {"ours_over_clairvoyant": round(ours["cost_worker_s"] / by["clairvoyant"]["cost_worker_s"], 3)
                   if by["clairvoyant"]["cost_worker_s"] else None}
        if meeting:
            cheapest = min(meeting, key=lambda n: meeting[n]["cost_worker_s"])
            r["cheapest_meeting_baseline"] = cheapest
            r["ours_over_cheapest_meeting"] = round(ours["cost_worker_s"] / meeting[cheapest]["cost_worker_s"], 3)
            r["aim_met"] = ours["meets_target"] and all(
                ours["cost_worker_s"] < f["cost_worker_s"] for f in meeting.values())
        else:
            p95 = {n: (f["p95_wait_s"] if f["p95_wait_s"] is not None else math.inf)
                   for n, f in by.items() if n != "clairvoyant"}
            r["cheapest_meeting_baseline"] = None
            r["ours_over_cheapest_meeting"] = None
            r["aim_met"] = p95["ours"] <= min(p95.values())
        r["within_1_25x_clairvoyant"] = r["ours_over_clairvoyant"] is not None and r["ours_over_clairvoyant"] <= 1.25
        out[trace] = r
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.autoscale", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true",
                   help="end with one JSON object on the last line (figures per trace and policy)")
    p.add_argument("--trace", action="append", metavar="FILE.csv",
                   help="run this CSV trace (rows t_seconds,arrivals_per_s) instead of the built-in "
                        "ones; its name is the file's stem; may be repeated")
    p.add_argument("--out", default=str(HERE / "out"),
                   help="folder for the PNG plots (default: bench/out/)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--seed", type=int, default=1, help="random seed for arrivals and service times (default 1)")
    p.add_argument("--service-prior", type=float, default=SERVICE_MEAN_S, metavar="SECONDS",
                   help="ours' first estimate of the service time (default: the true mean, "
                        f"{SERVICE_MEAN_S:g} s, as the baselines are told it); try 0.5 or 2 to "
                        "see how much a wrong guess costs")
    args = p.parse_args(argv)
    global SERVICE_PRIOR_S
    if not 0.01 <= args.service_prior <= 100:
        p.error(f"--service-prior={args.service_prior:g} is not allowed: from 0.01 to 100 seconds")
    SERVICE_PRIOR_S = args.service_prior

    try:
        traces = [load_trace(f) for f in args.trace] if args.trace else \
            [load_trace(TRACES_DIR / f"{n}.csv") for n in BUILTIN_TRACES]
    except (OSError, ValueError) as e:
        p.error(str(e))
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    say(f"world: target wait {TARGET_WAIT_S:g}s (p95), boot {BOOT_TIME_S:g}s, service log-normal mean "
        f"{SERVICE_MEAN_S:g}s sigma {SERVICE_SIGMA}, at most {MAX_SERVERS} servers, seed {args.seed}")
    for sim in make_sims(traces[0]):
        say(f"  {sim.name:<11} poll {sim.poll_s:g}s  {json.dumps(sim.params(), default=str)}")
    results: dict[str, dict] = {}
    began = time.monotonic()
    for trace in traces:
        results[trace.name], series = {}, {}
        for sim in make_sims(trace):
            results[trace.name][sim.name], series[sim.name] = simulate(trace, sim, args.seed)
        if not args.no_plots:
            path = plot(trace, series, Path(args.out))
            say(f"plot: {path}")
    rat = ratios(results)
    say(f"\n{'trace':<13} {'policy':<11} {'cost_w_s':>9} {'p50':>7} {'p95':>7} {'max':>7} "
        f"{'over_s':>7} {'acts':>5} meets")
    for trace, by in results.items():
        for name, f in by.items():
            say(f"{trace:<13} {name:<11} {f['cost_worker_s']:>9.0f} {f['p50_wait_s']:>7.1f} "
                f"{(f['p95_wait_s'] if f['p95_wait_s'] is not None else math.inf):>7.1f} "
                f"{(f['max_wait_s'] if f['max_wait_s'] is not None else math.inf):>7.1f} "
                f"{f['over_target_s']:>7.0f} {f['actions']:>5} {'yes' if f['meets_target'] else 'no'}")
    say("\nratios (cost): ours / cheapest baseline meeting the target, ours / clairvoyant")
    for trace, r in rat.items():
        vs = (f"{r['ours_over_cheapest_meeting']:.3f} vs {r['cheapest_meeting_baseline']}"
              if r["cheapest_meeting_baseline"] else "no baseline meets the target")
        say(f"  {trace:<13} {vs:<28} clairvoyant {r['ours_over_clairvoyant']}  aim "
            f"{'met' if r['aim_met'] and r['within_1_25x_clairvoyant'] else 'NOT met'}")
    say(f"({time.monotonic() - began:.1f}s)")
    if args.json:
        print(json.dumps({"target_wait_s": TARGET_WAIT_S, "traces": results, "ratios": rat}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The discrete-event simulation: a FIFO queue, a group of servers, a controller and an actuator.

A server asked for at t costs from t and starts consuming at t + boot time; it takes the oldest
waiting message whenever it is free. A controller (our policy, a baseline, the oracle) looks
every ``poll_s`` seconds at what the real monitor sees (the queue's free / claimed / total /
oldest age, the group's size and, when the actuator reports it, how many are booting) and
returns a desired size, which the actuator applies (at once, or the way Heat would).
"""

from __future__ import annotations

import abc
import bisect
import dataclasses
import heapq
import math

from bench.traces import Trace
from bench.worlds import Sample, World
from workload.autoscale.policy import Observation, erlang_c_servers
from workload.queues.base import QueueStats

RUN_ON_LIMIT_S = 1800.0  # after the trace ends, run on until the queue is empty, at most this long


def seen(obs: Observation) -> tuple[QueueStats, int]:
    """The queue depth and group size of an observation of the simulated fleet, which always has
    both (a real monitor's may lack either: see :class:`Observation`)."""
    if obs.stats is None or obs.current is None:
        raise ValueError(f"an observation of the simulated fleet without stats or size: {obs!r}")
    return obs.stats, obs.current


class Controller(abc.ABC):
    """What decides the group's size: looks every ``poll_s`` seconds, returns the desired size."""

    name = ""
    poll_s = 10.0

    @abc.abstractmethod
    def decide(self, obs: Observation) -> int | None:
        """The desired number of servers after this look (None: leave the group alone)."""


@dataclasses.dataclass
class Server:
    id: int
    asked_at: float
    ready_at: float
    busy_until: float = 0.0
    msg_arrival: float | None = None  # arrival time of the message it is processing
    msg_service: float = 0.0  # that message's service time
    wait_pos: int = -1  # where that message's wait is in Fleet.waits


@dataclasses.dataclass(frozen=True)
class ScaleIn:
    """How a removed server leaves.

    ``drain`` True: it claims nothing more, finishes the message it holds (the simulation knows
    its remaining service time) and powers off ``power_off_s`` later; it costs until then.
    ``drain`` False: it is deleted at once (Nova's delete is a hard power-off) and costs
    ``power_off_s`` more; the message it held is lost mid-way and comes back to the queue when
    its claim lapses, ``claim_ttl_s`` later, to be done again from the start (a redelivery).
    """

    drain: bool = True
    power_off_s: float = 0.0
    claim_ttl_s: float = 300.0


GRACEFUL = ScaleIn()  # the local actuator: SIGTERM, the consumer finishes what it holds


class Fleet:
    """A FIFO queue and a group of servers, advanced message by message.

    The queue holds the messages that arrived and have not started: arrivals ``started`` ..
    ``i - 1``, and the lost messages (held by a server deleted mid-way) whose claim has lapsed.
    FIFO with identical servers means message k starts at the later of its arrival and the
    earliest time a server is free, so no event queue is needed; a lost message goes before
    newer ones once it is visible again (the queue hands out the oldest first).
    """

    def __init__(self, sample: Sample, boot_s: float, max_servers: int):
        self.arrivals, self.services = sample.arrivals, sample.services
        self.i = 0  # arrivals up to the time advanced to
        self.started = 0  # messages started (message k has service time k)
        self.boot_s, self.max_servers = boot_s, max_servers
        self.servers: dict[int, Server] = {}
        self.heap: list[tuple[float, int]] = []  # (available from, server id) of group members
        self.retiring: list[tuple[Server, float]] = []  # (removed server, when it stops costing)
        # Messages a deleted server held: (visible again at, arrival, service, wait position).
        self.lost: list[tuple[float, float, float, int]] = []
        self.redeliveries = 0
        self.next_id = 0
        self.cost = 0.0
        self.waits: list[float] = []
        self.actions = 0

    @property
    def size(self) -> int:
        return len(self.servers)

    @property
    def free(self) -> int:
        """Fresh messages waiting (arrived, not started)."""
        return self.i - self.started

    def advance(self, t_end: float) -> None:
        """Start every message that starts by ``t_end``."""
        arrivals, services, heap, servers = self.arrivals, self.services, self.heap, self.servers
        waits, k, n, lost = self.waits, self.started, len(self.arrivals), self.lost
        replace = heapq.heapreplace
        inf = math.inf
        while heap and (k < n or lost):
            free_at, sid = heap[0]
            a = arrivals[k] if k < n else inf
            start = free_at if free_at > a else a
            if lost:
                visible, la, ls, pos = lost[0]
                lstart = free_at if free_at > visible else visible
                if lstart < start or (lstart == start and la <= a):
                    if lstart > t_end:
                        break
                    heapq.heappop(lost)
                    self._start(servers[sid], lstart, la, ls, pos)
                    replace(heap, (lstart + ls, sid))
                    waits[pos] = lstart - la  # the wait is to the start that finishes it
                    continue
            if start > t_end:
                break
            busy = start + services[k]
            replace(heap, (busy, sid))
            s = servers[sid]
            s.msg_arrival, s.busy_until, s.msg_service, s.wait_pos = a, busy, services[k], len(waits)
            waits.append(start - a)
            k += 1
        self.started = k
        self.i = bisect.bisect_right(arrivals, t_end, lo=k)

    @staticmethod
    def _start(s: Server, start: float, arrival: float, service: float, pos: int) -> None:
        s.msg_arrival, s.busy_until, s.msg_service, s.wait_pos = arrival, start + service, service, pos

    def observe(self, t: float, report_booting: bool = True) -> Observation:
        """What the monitor sees at ``t``; ``report_booting`` False: booting servers not told
        apart (the Heat actuator reads only the group's size). A lost message counts as claimed
        until its claim lapses (the queue cannot tell a dead consumer from a slow one)."""
        # A busy server always has its message's arrival (both are set together in advance()).
        busy = [s for s in self.servers.values() if s.busy_until > t] + [
            s for s, _ in self.retiring if s.busy_until > t
        ]
        in_flight = [s.msg_arrival for s in busy if s.msg_arrival is not None]
        held = [a for v, a, _, _ in self.lost if v > t]
        back = [a for v, a, _, _ in self.lost if v <= t]
        free = self.free + len(back)
        waiting = back + ([self.arrivals[self.started]] if self.free else [])
        oldest = min(in_flight + held + waiting, default=None)
        stats = QueueStats(
            free=free,
            claimed=len(in_flight) + len(held),
            total=free + len(in_flight) + len(held),
            oldest_age=None if oldest is None else t - oldest,
        )
        booting = self.booting(t) if report_booting else 0
        return Observation(now=t, stats=stats, current=len(self.servers), booting=booting)

    def booting(self, t: float) -> int:
        return sum(1 for s in self.servers.values() if s.ready_at > t)

    def resize(
        self, desired: int, t: float, *, oldest_first: bool = False, scale_in: ScaleIn = GRACEFUL
    ) -> None:
        """Grow (new servers boot) or shrink to ``desired`` (within 0..max_servers).

        Shrinking picks idle servers first, then booting, then busy ones, or with
        ``oldest_first`` the oldest (what Heat does); each leaves as ``scale_in`` says.
        """
        desired = max(0, min(self.max_servers, desired))
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

        def order(s: Server) -> tuple[int, float]:
            if oldest_first:
                return (0, s.asked_at)
            if s.ready_at > t:
                return (1, -s.ready_at)
            if s.busy_until <= t:
                return (0, 0.0)
            return (2, s.busy_until)

        victims = sorted(self.servers.values(), key=order)[: cur - desired]
        for s in victims:
            del self.servers[s.id]
            self._remove(s, t, scale_in)
        gone = {s.id for s in victims}
        self.heap = [(a, i) for a, i in self.heap if i not in gone]
        heapq.heapify(self.heap)

    def _remove(self, s: Server, t: float, scale_in: ScaleIn) -> None:
        """Charge a removed server until it is off; lose its message if it is not drained."""
        busy = s.ready_at <= t < s.busy_until and s.msg_arrival is not None
        if busy and scale_in.drain:
            self.retiring.append((s, s.busy_until + scale_in.power_off_s))
            return
        if busy and s.msg_arrival is not None:
            heapq.heappush(self.lost, (t + scale_in.claim_ttl_s, s.msg_arrival, s.msg_service, s.wait_pos))
            self.redeliveries += 1
            s.busy_until = t  # killed mid-message: its in-flight message is the lost one now
        self.retiring.append((s, t + scale_in.power_off_s))

    def settle(self, t: float) -> None:
        """Charge removed servers that stopped costing by ``t``."""
        keep = []
        for s, until in self.retiring:
            if until <= t:
                self.cost += until - s.asked_at
            else:
                keep.append((s, until))
        self.retiring = keep

    def close(self, t: float) -> float:
        """Stop everything at ``t`` (or when the last message ends, if later); return that time."""
        end = max([t] + [s.busy_until for s in self.servers.values()])
        for s in self.servers.values():
            self.cost += end - s.asked_at
        for s, until in self.retiring:
            self.cost += max(end, until) - s.asked_at
        self.servers.clear()
        self.retiring = []
        return end

    def idle(self) -> bool:
        return self.started >= len(self.arrivals) and not self.lost


@dataclasses.dataclass
class Run:
    """One controller on one seed: every message's wait (inf: never started), cost, work, the
    resizes asked for and the messages done again because a server was deleted holding them."""

    waits: list[float]
    cost: float
    work: float
    actions: int
    redeliveries: int = 0


def initial_servers(trace: Trace, world: World) -> int:
    """Every policy starts with the fleet the load at t=0 needs (Erlang C), already booted."""
    load = trace.rate_at(0)  # busy servers: a world divides the rates by its mean service time
    return min(world.max_servers, erlang_c_servers(load, world.service_mean_s, world.target_wait_s, 0.95))


def simulate(trace: Trace, world: World, sample: Sample, controller: Controller, actuator) -> Run:
    """Run ``controller`` through ``actuator`` on one seed's ``sample`` of ``trace``."""
    fleet = Fleet(sample, world.boot_s, world.max_servers)
    fleet.resize(initial_servers(trace, world), -world.boot_s)
    fleet.actions = 0
    t = 0.0
    while True:
        fleet.advance(t)
        fleet.settle(t)
        actuator.apply(fleet, controller.decide(fleet.observe(t, actuator.reports_booting)), t)
        if t >= trace.end and (fleet.idle() or t >= trace.end + RUN_ON_LIMIT_S):
            break
        t += controller.poll_s
    unstarted = len(fleet.arrivals) - fleet.started
    for _, _, _, pos in fleet.lost:
        fleet.waits[pos] = math.inf  # lost and never done again within the limit
    fleet.close(t)
    waits = fleet.waits + [math.inf] * unstarted
    return Run(waits, fleet.cost, sample.work, fleet.actions, fleet.redeliveries)

"""``oracle``: a labelled reference that knows the arrival rate ahead. Not a runnable policy, and
not a lower bound either: it sizes an M/M/c queue (exponential service, every instant within the
target), so a policy that lets a backlog stand, or a world whose service is not exponential, can
cost less than it. Compare costs with the work floor instead."""
from __future__ import annotations

from workload.autoscale.policy import Observation, erlang_c_servers

from bench.sim import Controller
from bench.traces import Trace
from bench.worlds import World


class Oracle(Controller):
    """At t, the Erlang-C fleet for the highest rate before a server asked now would be ready."""

    name = "oracle"
    poll_s = 5.0

    def __init__(self, trace: Trace, world: World):
        self.trace = trace.scaled(1.0 / world.service_mean_s)
        self.world = world

    def decide(self, obs: Observation) -> int:
        w, t = self.world, obs.now
        rate = self.trace.max_rate(t, t + w.boot_s + self.poll_s)
        need = erlang_c_servers(rate * w.service_mean_s, w.service_mean_s, w.target_wait_s, 0.95)
        return min(w.max_servers, need)

"""Record the target and threshold policies' decisions on bench traces, to pin their behaviour.

    python -m tests.unit.autoscale.recorded   # rewrites fixtures/recorded_decisions.json

The recording drives each policy in bench's simulator (one seed, the first default world) and
keeps every observation with the decision's desired size and reason. ``test_recorded_decisions``
replays the observations into a fresh policy and asks for the same decisions: a refactoring
keeps them identical, a behaviour change rewrites the file in the commit that makes it.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.ours import ours_argv
from bench.worlds import DEFAULT_WORLDS
from workload.autoscale.policy import Observation, PolicyState
from workload.queues.base import QueueStats

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "recorded_decisions.json"
# Ours in the first default world with the service-time guess off 2x (step) and 0.5x (spike),
# and the seed's rule.
CASES = (
    ("target", "step", ours_argv(DEFAULT_WORLDS[0], service_x=2.0)),
    ("target", "spike", ours_argv(DEFAULT_WORLDS[0], service_x=0.5)),
    (
        "threshold",
        "onoff",
        ["--policy", "threshold", "-j", "20", "-n", "0", "-c", "60", "-m", "0", "-x", "60"],
    ),
)
SEED = 1


def compact(obs: Observation) -> list:
    """``[now, free, claimed, total, oldest_age, current, booting]`` (the file stays small; the
    numbers unrounded, as the target policy reads the oldest age)."""
    s = obs.stats
    return [obs.now, s.free, s.claimed, s.total, s.oldest_age, obs.current, obs.booting]


def observation(row: list) -> Observation:
    now, free, claimed, total, oldest, current, booting = row
    return Observation(
        now, QueueStats(free=free, claimed=claimed, total=total, oldest_age=oldest), current, booting
    )


def record() -> list[dict]:
    """Run every case in the simulator; return its looks."""
    from bench import sim
    from bench.actuators import Direct
    from bench.monitor_policy import MonitorPolicy
    from bench.traces import TRACES_DIR, load_trace
    from bench.worlds import sample

    world, out = DEFAULT_WORLDS[0], []
    for _, trace_name, argv in CASES:
        trace = load_trace(TRACES_DIR / f"{trace_name}.csv")
        looks: list[dict] = []

        class Recording(MonitorPolicy):
            def decide(self, obs):
                d = self.policy.decide(obs, self.state)
                self.state = d.state
                looks.append({"obs": compact(obs), "desired": d.desired, "reason": d.reason})
                return d.desired

        sim.simulate(trace, world, sample(trace, world, SEED), Recording(trace_name, argv), Direct())
        out.append({"trace": trace_name, "argv": argv, "looks": looks})
    return out


def replay(case: dict) -> list[tuple[int | None, str]]:
    """The decisions a fresh policy built from ``case["argv"]`` makes on its observations."""
    from bench.monitor_policy import MonitorPolicy

    policy = MonitorPolicy("replay", case["argv"]).policy
    state, got = PolicyState(), []
    for look in case["looks"]:
        d = policy.decide(observation(look["obs"]), state)
        state = d.state
        got.append((d.desired, d.reason))
    return got


if __name__ == "__main__":
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(record(), separators=(",", ":")) + "\n")
    print(FIXTURE.name, FIXTURE.stat().st_size, "bytes")

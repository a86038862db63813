"""What the queue-length baselines' knobs share: the grid they are swept over, the range check."""

from __future__ import annotations

from bench.sim import Controller
from bench.worlds import World
from workload.error_text import not_allowed

FACTORS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2)


def backlog_grid(world: World) -> list[float]:
    """Messages per server from 1/16 to 2x what one server clears within the target wait."""
    base = world.target_wait_s / world.service_mean_s
    return sorted({max(0.5, round(base * f, 2)) for f in FACTORS})


def positive(knob: str, value: float) -> float:
    """``value``, or a ValueError naming the knob when it is not above 0."""
    if not value > 0:
        raise ValueError(not_allowed(knob, value, "a number above 0"))
    return value


class PerServerTarget(Controller):
    """A baseline whose knob is a number of messages per server (KEDA's queueLength, AWS's
    target backlog per instance): ``target``, and the group's ``max_size``."""

    KNOB = ""

    def __init__(self, value: float, world: World):
        self.target, self.max_size = positive(self.KNOB, value), world.max_servers

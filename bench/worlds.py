"""The simulated worlds: boot time, service-time distribution, fleet limit and wait target.

A trace's rates are written for a 1 s mean service time; a world with mean service S divides
them by S, so every world asks for the same number of busy servers and only the granularity of
the work (and so the queue's noise) changes. Service times are log-normal with the world's mean
and coefficient of variation.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import random

from bench.traces import Trace


@dataclasses.dataclass(frozen=True)
class World:
    """One simulated world (every policy is measured in the same one)."""

    boot_s: float = 60.0  # from asking for a server to it consuming (cost runs from the ask)
    service_mean_s: float = 1.0  # mean seconds one message takes on one server
    service_cv: float = 0.5  # coefficient of variation of the service time (log-normal)
    max_servers: int = 60  # the group's max size, for every policy
    target_wait_s: float = 30.0  # p95 of the wait (arrival to start of processing) to keep under

    def validate(self) -> "World":
        """Refuse values out of range, naming the option and what is allowed."""
        checks = (("--boot-time", self.boot_s, 0, 3600), ("--service-mean", self.service_mean_s, 0.01, 600),
                  ("--service-cv", self.service_cv, 0, 5), ("--max-servers", self.max_servers, 1, 1000),
                  ("--target-wait", self.target_wait_s, 1, 86400))
        for flag, value, lo, hi in checks:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"{flag}={value!r} is not allowed: from {lo:g} to {hi:g}")
        return self

    @property
    def sigma(self) -> float:
        """Shape of the log-normal with this coefficient of variation."""
        return math.sqrt(math.log1p(self.service_cv ** 2))

    @property
    def label(self) -> str:
        return f"boot {self.boot_s:g}s, service {self.service_mean_s:g}s cv {self.service_cv:g}"

    def as_dict(self) -> dict:
        return {"boot_s": self.boot_s, "service_mean_s": self.service_mean_s,
                "service_cv": self.service_cv, "max_servers": self.max_servers}


# The default run: boot 60/180 s, service 1/5 s and cv 0.5/1.5, each pair of values once together.
DEFAULT_WORLDS = (
    World(boot_s=60, service_mean_s=1, service_cv=0.5),
    World(boot_s=180, service_mean_s=1, service_cv=1.5),
    World(boot_s=60, service_mean_s=5, service_cv=1.5),
    World(boot_s=180, service_mean_s=5, service_cv=0.5),
)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One seed's draw: arrival times and each message's service time (in arrival order)."""

    arrivals: tuple[float, ...]
    services: tuple[float, ...]

    @property
    def work(self) -> float:
        """The work floor: the sum of the service times (no fleet can cost less)."""
        return math.fsum(self.services)


@functools.lru_cache(maxsize=32)
def sample(trace: Trace, world: World, seed: int) -> Sample:
    """The arrivals and service times of ``seed``: the same for every policy of a world."""
    scaled = trace.scaled(1.0 / world.service_mean_s)
    arrivals = scaled.arrivals(random.Random(f"{seed}:{trace.name}:{world.service_mean_s}"))
    rng = random.Random(f"{seed}:{trace.name}:service:{world.service_mean_s}:{world.service_cv}")
    sigma = world.sigma
    mu = math.log(world.service_mean_s) - sigma ** 2 / 2
    services = tuple(rng.lognormvariate(mu, sigma) for _ in arrivals)
    return Sample(tuple(arrivals), services)

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
from workload.settings import setting


@dataclasses.dataclass(frozen=True)
class World:
    """One simulated world (every policy is measured in the same one)."""

    # Each field is also the benchmark's option of the same meaning (workload/settings.py reads
    # the metadata: flag, range, help), so bench/autoscale.py declares none of them again.
    boot_s: float = setting(
        60.0,  # cost runs from the ask
        "seconds from asking for a server to it consuming",
        flags=("--boot-time",),
        kind=float,
        lo=0,
        hi=3600,
        metavar="S",
    )
    service_mean_s: float = setting(
        1.0,
        "mean service time of a message, seconds",
        flags=("--service-mean",),
        kind=float,
        lo=0.01,
        hi=600,
        metavar="S",
    )
    service_cv: float = setting(
        0.5,  # of the log-normal
        "coefficient of variation of the service time",
        flags=("--service-cv",),
        kind=float,
        lo=0,
        hi=5,
        metavar="X",
    )
    max_servers: int = setting(
        60,
        "the group's max size in every world",
        flags=("--max-servers",),
        kind=int,
        lo=1,
        hi=1000,
        metavar="N",
    )
    target_wait_s: float = setting(
        30.0,  # the wait is arrival to start of processing
        "p95 wait to keep under, seconds",
        flags=("--target-wait",),
        kind=float,
        lo=1,
        hi=86400,
        metavar="S",
    )

    @property
    def sigma(self) -> float:
        """Shape of the log-normal with this coefficient of variation."""
        return math.sqrt(math.log1p(self.service_cv**2))

    @property
    def label(self) -> str:
        return f"boot {self.boot_s:g}s, service {self.service_mean_s:g}s cv {self.service_cv:g}"

    def as_dict(self) -> dict:
        return {
            "boot_s": self.boot_s,
            "service_mean_s": self.service_mean_s,
            "service_cv": self.service_cv,
            "max_servers": self.max_servers,
        }


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
    mu = math.log(world.service_mean_s) - sigma**2 / 2
    services = tuple(rng.lognormvariate(mu, sigma) for _ in arrivals)
    return Sample(tuple(arrivals), services)

"""``ours``: the target policy with the monitor's defaults, given priors the way a user gives them.

A user tells the monitor the wait target, the fleet's bounds, and a guess of the boot time and of
the service time (``--boot-time``, ``--service-time``); everything else is the monitor's default,
the same for every trace and world. The main row gives the world's true boot and mean service
time as the guesses; the prior rows give one of them off by 0.5x or 2x.
"""

from __future__ import annotations

from bench.monitor_policy import MonitorPolicy
from bench.worlds import World

PRIOR_FACTORS = ((0.5, 1.0), (2.0, 1.0), (1.0, 0.5), (1.0, 2.0))  # (boot x, service x)


def ours_argv(world: World, boot_x: float = 1.0, service_x: float = 1.0) -> list[str]:
    """The monitor command line of ours in ``world`` (guesses scaled by the factors)."""
    return [
        "--policy",
        "target",
        "-m",
        "0",
        "-x",
        str(world.max_servers),
        "--target-wait",
        f"{world.target_wait_s:g}",
        "--boot-time",
        f"{world.boot_s * boot_x:g}",
        "--service-time",
        f"{world.service_mean_s * service_x:g}",
    ]


def make_ours(world: World, boot_x: float = 1.0, service_x: float = 1.0) -> MonitorPolicy:
    return MonitorPolicy("ours", ours_argv(world, boot_x, service_x))


def prior_label(boot_x: float, service_x: float) -> str:
    """``boot 0.5x``, ``service 2x``: which guess is off, and by how much."""
    return f"boot {boot_x:g}x" if boot_x != 1 else f"service {service_x:g}x"

"""The seed's rule, run by the real ThresholdPolicy from a monitor command line.

``-j`` (free messages above which one ``--step`` is added; the knob we sweep), ``-n 0`` (at or
below which one is removed), ``-c 60`` (the seed's cooldown, both directions), ``-t`` the
monitor's default interval; within ``-m 0`` .. ``-x`` the world's max.
"""
from __future__ import annotations

from bench.monitor_policy import MonitorPolicy
from bench.worlds import World

KNOB = "-j"


def sweep(world: World) -> list[float]:
    """-j values from 1 to 100 messages."""
    return [1, 5, 10, 20, 50, 100]


def Threshold(j: float, world: World) -> MonitorPolicy:
    """The seed's monitor with ``-j j``."""
    return MonitorPolicy("threshold", ["--policy", "threshold", "-j", str(int(j)), "-n", "0",
                                       "-c", "60", "-m", "0", "-x", str(world.max_servers)])

"""The real monitor's policies, built from a monitor command line, and a controller that runs one.

The benchmark builds ``ours`` and ``threshold`` exactly as ``python -m workload monitor ARGS``
would (same parser, same defaults, same ``policy_from_args``), so a default the monitor changes
is a default the benchmark measures. ``QW_*`` variables of the benchmark's own environment are
kept out, or they would change the defaults.
"""

from __future__ import annotations

import argparse
import os
from unittest import mock

from bench.sim import Controller
from workload.autoscale import monitor
from workload.autoscale.policy import Observation, Policy, PolicyState


def monitor_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` as the monitor's scaling options, with no ``QW_*`` environment."""
    parser = argparse.ArgumentParser(prog="monitor")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QW_")}
    with mock.patch.dict(os.environ, clean, clear=True):
        monitor.add_arguments(parser)
        return parser.parse_args(argv)


class MonitorPolicy(Controller):
    """A policy of ``workload.autoscale.policy`` looking every monitor ``-t`` seconds."""

    def __init__(self, name: str, argv: list[str]):
        args = monitor_args(argv)
        self.name = name
        self.argv = argv
        self.poll_s = float(args.interval)
        self.policy: Policy = monitor.policy_from_args(args)
        self.state = PolicyState()

    def decide(self, obs: Observation) -> int | None:
        d = self.policy.decide(obs, self.state)
        self.state = d.state
        return d.desired

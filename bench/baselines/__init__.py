"""The baselines: each a module with its documented semantics, its one knob and its sweep.

A baseline *tuned by hindsight* on a trace is its cheapest sweep value that meets the target
there (see :func:`bench.sweep.tuned`).
"""
from __future__ import annotations

from bench.baselines import aws, keda, threshold

BASELINES = {"keda": (keda.Keda, keda), "aws": (aws.Aws, aws), "threshold": (threshold.Threshold, threshold)}


def knob(name: str) -> str:
    """The name of a baseline's swept option."""
    return BASELINES[name][1].KNOB


def sweep(name: str, world) -> list[float]:
    """The values of a baseline's knob the benchmark runs in ``world``."""
    return BASELINES[name][1].sweep(world)


def make(name: str, value: float, world):
    """A fresh controller of baseline ``name`` with its knob at ``value``."""
    return BASELINES[name][0](value, world)

"""Scaling policies: pure functions from what the monitor observed to a desired capacity.

No I/O and no clock reads in here: the caller passes the time in the :class:`Observation`, and
the previous :class:`PolicyState` in; a :class:`Decision` (desired capacity, the reason in words,
the new state) comes out. The same code runs in the monitor, the demo and ``bench.autoscale``.

Two policies:

``threshold``
    The seed demo's rule: one step up when free messages exceed ``scale_up_threshold`` (-j), one
    step down when they are at or below ``scale_down_threshold`` (-n), within min/max, with a
    cooldown after scaling up and another after any action before scaling down.

``target``
    Sizes the group for a target wait. From the queue's stats it estimates the offered load
    (messages in flight plus the net growth of the queue, by Little's law), the arrival rate, and
    the backlog that will have piled up by the time a new server has booted. Its per-message
    service time starts at ``service_time_s`` and moves both ways on looks with a standing
    backlog (every slot busy: service = in flight / completions, the completions being the
    waiting line's arrival rate, backlog over the head's wait, less the growth); idle looks leave
    it alone. The steady fleet is the smallest whose probability of a wait above the target stays
    under 1 - ``wait_quantile`` (Erlang C), plus what clears the projected backlog beyond a
    standing allowance within ``backlog_clear_s``. Scale-up acts at once (at most
    ``max_step_up``), scale-down takes the highest recommendation of the last
    ``scale_down_window_s`` seconds (at most ``max_step_down``), an empty queue for
    ``idle_to_zero_s`` seconds scales to zero and ``activation_backlog`` messages wake it.

Both hold capacity when the queue stats or the group size could not be read.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from workload.autoscale.policy.base import Decision, Observation, Policy, PolicyConfigError, PolicyState
from workload.autoscale.policy.erlang import erlang_c_servers
from workload.autoscale.policy.target import TargetConfig, TargetPolicy
from workload.autoscale.policy.threshold import ThresholdConfig, ThresholdPolicy

__all__ = [
    "POLICIES",
    "Decision",
    "Observation",
    "Policy",
    "PolicyConfigError",
    "PolicyState",
    "TargetConfig",
    "TargetPolicy",
    "ThresholdConfig",
    "ThresholdPolicy",
    "erlang_c_servers",
    "make_policy",
]

POLICIES = {"threshold": (ThresholdPolicy, ThresholdConfig), "target": (TargetPolicy, TargetConfig)}


def make_policy(name: str, **options: Any) -> Policy:
    """Build a policy by name (``threshold`` or ``target``) from config keyword options."""
    if name not in POLICIES:
        raise PolicyConfigError("policy", name, f"one of {', '.join(sorted(POLICIES))}")
    cls, cfg = POLICIES[name]
    known = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise PolicyConfigError(
            unknown[0], options[unknown[0]], f"an option of the {name} policy ({', '.join(sorted(known))})"
        )
    return cls(cfg(**options))

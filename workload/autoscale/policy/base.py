"""What every scaling policy shares: the observation, the decision, the state, the fleet bounds,
and the guard that holds the group's size when an observation is missing."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from workload.queues.base import QueueStats
from workload.settings import SettingError, setting


class PolicyConfigError(SettingError):
    """A policy option is out of range; names the key, the value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the monitor saw at ``now`` (seconds, any monotonic origin).

    ``stats`` is None when the queue could not be read; ``current`` is None when the group could
    not be read. ``booting`` counts members of ``current`` still booting (not consuming yet).
    """

    now: float
    stats: QueueStats | None
    current: int | None
    booting: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": round(self.now, 3),
            "stats": self.stats.as_dict() if self.stats else None,
            "current": self.current,
            "booting": self.booting,
        }


@dataclasses.dataclass(frozen=True)
class PolicyState:
    """What a policy remembers between observations. Opaque to callers; start with ``PolicyState()``."""

    last_now: float | None = None
    last_total: int | None = None
    last_claimed: int | None = None
    last_free: int | None = None
    last_up_at: float | None = None  # time of the last scale-up this policy asked for
    last_action_at: float | None = None  # time of the last change in either direction
    last_down_at: float | None = None  # time of the last scale-down this policy asked for
    arrival_rate: float | None = None  # messages/s, smoothed
    service_time: float | None = None  # seconds per message per slot, learnt from looks with a backlog
    idle_since: float | None = None  # when the queue was last seen becoming empty
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, wanted) inside the down window
    watching_since: float | None = None  # first observation: no scale-down before a full window


@dataclasses.dataclass(frozen=True)
class Decision:
    """The desired capacity (None = leave the group alone, size unknown), why, and the new state."""

    desired: int | None
    reason: str
    state: PolicyState
    current: int | None = None
    estimates: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def action(self) -> str:
        """``up``, ``down`` or ``hold`` compared with the group size that was observed."""
        if self.desired is None or self.current is None or self.desired == self.current:
            return "hold"
        return "up" if self.desired > self.current else "down"

    def as_dict(self) -> dict[str, Any]:
        return {
            "desired": self.desired,
            "action": self.action,
            "reason": self.reason,
            "estimates": {k: round(v, 4) for k, v in self.estimates.items()},
        }


# ---------------------------------------------------------------------------- configuration

# Each field declares its option once (workload/settings.py): range, help, the monitor's flag and
# variable, and the stack key the stack's monitor is set by. min_size and max_size are shared.
MIN_SIZE: dict[str, Any] = dict(
    help="fewest consumer servers in the group (target policy with 0: scale to zero when idle)",
    flags=("-m", "--min"),
    env=("QW_MIN",),
    kind=int,
    lo=0,
    hi=10000,
    stack="minSize",
    stack_default=1,
)
MAX_SIZE: dict[str, Any] = dict(
    help="most consumer servers in the group",
    flags=("-x", "--max"),
    env=("QW_MAX",),
    kind=int,
    lo=0,
    hi=10000,
    stack="maxSize",
    stack_default=10,
)


@dataclasses.dataclass(frozen=True)
class Bounds:
    min_size: int = setting(0, **MIN_SIZE)
    max_size: int = setting(2, **MAX_SIZE)

    def _validate_bounds(self) -> None:
        if self.max_size < self.min_size:
            raise PolicyConfigError("max_size", self.max_size, f"at least min_size ({self.min_size})")

    def clamp(self, n: int) -> int:
        return max(self.min_size, min(self.max_size, n))


# ---------------------------------------------------------------------------- shared helpers


def hold(obs: Observation, state: PolicyState, why: str) -> Decision:
    """Keep the group as it is; keep the learnt state but forget the stats baseline."""
    new = dataclasses.replace(state, last_now=None, last_total=None, last_claimed=None, last_free=None)
    return Decision(obs.current, f"hold: {why}", new, obs.current)


def missing(obs: Observation) -> str:
    """What an incomplete observation lacks, in words."""
    if obs.stats is None and obs.current is None:
        return "queue stats and group size unavailable"
    if obs.stats is None:
        return "queue stats unavailable"
    return "group size unavailable"


# ---------------------------------------------------------------------------- policies


class Policy(Protocol):
    name: str

    def decide(self, obs: Observation, state: PolicyState) -> Decision: ...


class Guarded(abc.ABC):
    """What every policy does first: validate its config once, and hold the group's size when the
    observation is missing or failed (never scale, least of all to zero, on missing data)."""

    name: str

    def __init__(self, config):
        self.config = config.validate()

    def decide(self, obs: Observation, state: PolicyState) -> Decision:
        if obs.stats is None or obs.current is None:
            return hold(obs, state, missing(obs))
        return self._decide(obs, obs.stats, obs.current, state)

    @abc.abstractmethod
    def _decide(self, obs: Observation, stats: QueueStats, current: int, state: PolicyState) -> Decision:
        """The policy's own rule, on a complete observation: ``obs`` with its ``stats`` and
        ``current`` (the group's size), both known."""

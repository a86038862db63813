"""The actuator interface: read a group's real size, apply a desired capacity.

One file per backend beside this one (``local.py`` for consumer processes on this machine,
``heat.py`` for an OS::Heat::AutoScalingGroup). The monitor only ever talks to this interface.
"""

from __future__ import annotations

import abc
import dataclasses


@dataclasses.dataclass(frozen=True)
class GroupState:
    """What the actuator can see of the group right now.

    ``current`` counts members that exist; ``booting`` those among them still booting (not yet
    consuming); ``updating`` is True while the backend is still carrying out an earlier change
    (a Heat stack UPDATE_IN_PROGRESS), during which the monitor takes no new action;
    ``leaving`` counts members asked to drain before they are removed (not in ``current``: the
    policy sees the capacity that stays).
    """

    current: int
    booting: int = 0
    updating: bool = False
    min_size: int | None = None
    max_size: int | None = None
    leaving: int = 0


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    """What happened when a decision was applied: the size before and the size read back after."""

    requested: int
    before: int
    after: int
    detail: str = ""

    @property
    def changed(self) -> bool:
        return self.after != self.before


class ActuatorError(Exception):
    """The backend refused or failed; carries the backend's own message."""


class Actuator(abc.ABC):
    """Reads the group's real size and applies a decision."""

    @abc.abstractmethod
    def observe(self) -> GroupState:
        """The group's real state (raises :class:`ActuatorError` when it cannot be read)."""

    @abc.abstractmethod
    def apply(self, desired: int, reason: str) -> ApplyResult:
        """Move the group toward ``desired`` members and return what was read back."""

    def close(self) -> None:
        """Release what the actuator holds (processes, sessions). Default: nothing."""

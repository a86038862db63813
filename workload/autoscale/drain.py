"""Graceful scale-in on Heat: which members leave, when they have drained, and how the group
shrinks so that exactly those go. Pure: no I/O and no clock reads (the caller passes ``now``).

Why it is needed: Heat shrinks an ``OS::Heat::AutoScalingGroup`` by deleting member servers, and
Nova's delete is the hypervisor's hard power-off (nova/compute/manager.py ``_shutdown_instance``
calls the driver's ``destroy``): the consumer on a removed server never sees SIGTERM, its
handlers die mid-job and their messages come back only after the claim TTL plus grace.

The protocol (the monitor's side is here and in :mod:`workload.autoscale.drain_heat`; the
consumer's side in :mod:`workload.drain_request`):

1. The monitor picks the members that will leave (:func:`choose_leavers`) and sets the server
   metadata key :data:`DRAIN_KEY` on each (value: the drain deadline, Unix seconds).
2. The consumer on that server sees the key in its metadata (the metadata API), stops claiming,
   finishes or releases what it holds, exits 0, and its unit powers the server off: Nova reports
   SHUTOFF.
3. The monitor removes the drained members (:func:`removable`) with a resize, which deletes
   exactly them; members that never drain are removed at the deadline (their claims
   expire; nothing is lost, but their messages are handled again).

A member whose server holds no work though no drain is asked of it (:func:`stranded`) counts as
leaving too, and goes the same way: a drain called off (a scale-up) after the consumer had
finished and exited still ends in a power-off (one called off while it still works is taken
back: :mod:`workload.drain_request`), and a server that crashed or was stopped does no work
either. Counting such a member as capacity would keep the
group short for good.

Which members Heat removes: ``heat/common/grouputils.py`` ``get_members`` sorts by
``(status != FAILED, created_time, name)`` and ``heat/scaling/template.py``
``member_definitions`` keeps the *last* N of that list, so a scale-down (a signal, or an update of
``desired_capacity``) removes failed members first, then the oldest. So the members asked to
drain are the oldest healthy ones, and a resize removes them once they have drained.

Why not choose others (idle or still booting members) and make them go first with Heat's
mark-unhealthy: measured on Heat 27, a marked member stops counting in the group's size, so only
an update of ``desired_capacity`` removes exactly it (a relative signal would remove the marked
member *and* the oldest healthy one); and the mark is a PATCH of a resource of the group's nested
stack, whose name exists only once the stack does, so the monitor's access rules could not keep
it to its own group. Heat's own order needs neither.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

DRAIN_KEY = "qw_drain"
"""Server metadata key that asks the consumer on that server to drain; value: deadline (Unix s)."""

# Nova server states in which the server holds no work: it powered itself off after draining,
# or it crashed, or Nova lost it.
HOLDS_NO_WORK = ("SHUTOFF", "ERROR", "DELETED", "SOFT_DELETED")


@dataclasses.dataclass(frozen=True)
class Member:
    """One member of the group as Heat's nested stack and Nova report it.

    ``status`` is the member resource's Heat status (``CREATE_COMPLETE``, ``CHECK_FAILED`` ...);
    ``created`` its ``creation_time`` as Heat gives it (ISO 8601, so strings sort in time order);
    ``server_status`` Nova's status of ``server_id`` (None: not known, e.g. not yet created).
    """

    name: str
    status: str
    created: str
    server_id: str | None = None
    server_status: str | None = None

    @property
    def failed(self) -> bool:
        """Heat's FAILED status (CREATE_FAILED, UPDATE_FAILED, CHECK_FAILED after mark-unhealthy)."""
        return self.status.endswith("_FAILED")

    @property
    def drained(self) -> bool:
        """The server holds no work any more (powered off, errored, or gone)."""
        return self.server_id is None or self.server_status in HOLDS_NO_WORK


@dataclasses.dataclass(frozen=True)
class Drain:
    """A drain asked of one member: when, and until when the monitor waits for it."""

    member: str
    server_id: str | None
    asked_at: float
    deadline: float
    asked: bool = True  # False: a stranded member (see :func:`stranded`), no request on its server


def removal_order(members: Iterable[Member]) -> list[Member]:
    """The members in the order Heat removes them on a scale-down (failed, then oldest, then name)."""
    return sorted(members, key=lambda m: (not m.failed, m.created, m.name))


def healthy(members: Iterable[Member]) -> list[Member]:
    """The members that count in the group's size (Heat's ``get_size``: not FAILED), in removal order."""
    return [m for m in removal_order(members) if not m.failed]


def choose_leavers(members: Sequence[Member], k: int, leaving: Iterable[str] = ()) -> list[Member]:
    """The ``k`` members to drain next (besides those already ``leaving``): the next ones a
    scale-down removes, the head of Heat's order among the healthy members."""
    if k < 0:
        raise ValueError(f"k={k} is not allowed: a number of members >= 0")
    gone = set(leaving)
    return [m for m in healthy(members) if m.name not in gone][:k]


def stranded(members: Iterable[Member], drains: Iterable[Drain], now: float) -> list[Drain]:
    """The members whose server holds no work (off, errored or gone) though no drain is asked of
    them, as drains due ``now``: they leave like drained members. Failed members are Heat's to
    remove and are not counted in its size, so they are left out."""
    asked = {d.member for d in drains}
    return [
        Drain(m.name, m.server_id, now, now, asked=False)
        for m in removal_order(members)
        if m.server_id is not None and m.drained and not m.failed and m.name not in asked
    ]


def removable(
    drains: Sequence[Drain], members: Sequence[Member], now: float
) -> tuple[list[Drain], list[Drain]]:
    """Which asked drains can be removed now: ``(ready, timed_out)``.

    A drain is ready when its member has drained (server SHUTOFF or gone) and timed out when
    its deadline has passed without that; a member no longer in the group is ready (it has left
    some other way). A resize removes the head of Heat's order, so only the longest run of
    ready-or-timed-out drains at that head may go now: removing a later one would delete an
    earlier member that still works.
    """
    by_name = {m.name: m for m in members}
    ready, timed_out = [], []
    for d in drains:
        m = by_name.get(d.member)
        if m is None or m.drained:
            ready.append(d)
        elif now >= d.deadline:
            timed_out.append(d)
    go = {d.member for d in ready + timed_out}
    keep = {d.member for d in drains} - set(by_name)
    for m in healthy(members):
        if m.name not in go:
            break
        keep.add(m.name)
    return [d for d in ready if d.member in keep], [d for d in timed_out if d.member in keep]


def to_cancel(drains: Sequence[Drain], members: Sequence[Member], wanted: int) -> list[Drain]:
    """On a scale-up while members drain: the drains to call off (newest asked first) so that
    ``wanted`` more members stay; a member that has already drained cannot be called back."""
    by_name = {m.name: m for m in members}
    live = [d for d in drains if d.member in by_name and not by_name[d.member].drained]
    live.sort(key=lambda d: d.asked_at, reverse=True)
    return live[: max(0, wanted)]

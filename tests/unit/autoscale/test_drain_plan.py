"""The drain protocol's planning (workload/autoscale/drain.py): which members leave, when they may
go, and how the group shrinks so that exactly those go. The Heat behaviour these rules follow was
measured on the real local Heat (tests/controlplane/test_drain_heat.py proves the removal)."""
from __future__ import annotations

import pytest

from workload.autoscale.drain import (PATCH, SIGNAL, Drain, Member, choose_leavers, removable, removal,
                                      removal_order, to_cancel)


def m(name, created, status="CREATE_COMPLETE", server="ACTIVE"):
    return Member(name=name, status=status, created=created, server_id=f"srv-{name}", server_status=server)


GROUP = [m("c", "2026-12-01T10:00:03"), m("a", "2026-12-01T10:00:01"), m("b", "2026-12-01T10:00:02")]


def test_heat_removes_failed_first_then_oldest_then_by_name():
    members = GROUP + [m("z", "2026-12-01T10:00:09", status="CHECK_FAILED"), m("a2", "2026-12-01T10:00:01")]
    assert [x.name for x in removal_order(members)] == ["z", "a", "a2", "b", "c"]


def test_signal_mode_drains_exactly_the_members_heat_would_remove():
    assert [x.name for x in choose_leavers(GROUP, 2, SIGNAL)] == ["a", "b"]
    # a member already leaving is not asked twice; the next one in Heat's order is
    assert [x.name for x in choose_leavers(GROUP, 1, SIGNAL, leaving=["a"])] == ["b"]


def test_patch_mode_prefers_members_that_hold_no_work():
    members = [m("a", "1"), m("b", "2", server="BUILD"), m("c", "3", server="SHUTOFF"), m("d", "4")]
    assert [x.name for x in choose_leavers(members, 3, PATCH)] == ["c", "b", "a"]


def test_failed_members_are_never_chosen_heat_removes_them_anyway():
    members = [m("a", "1", status="CREATE_FAILED"), m("b", "2")]
    assert [x.name for x in choose_leavers(members, 2, PATCH)] == ["b"]


def test_bad_arguments_name_what_is_allowed():
    with pytest.raises(ValueError, match="k=-1 is not allowed"):
        choose_leavers(GROUP, -1, SIGNAL)
    with pytest.raises(ValueError, match="mode='exact' is not allowed"):
        choose_leavers(GROUP, 1, "exact")


def test_a_drain_is_ready_once_the_server_is_off_or_gone_and_times_out_at_its_deadline():
    members = [m("a", "1", server="SHUTOFF"), m("b", "2"), m("c", "3")]
    drains = [Drain("a", "srv-a", 0, 100), Drain("b", "srv-b", 0, 100), Drain("gone", None, 0, 100)]
    ready, late = removable(drains, members, now=50, mode=PATCH)
    assert [d.member for d in ready] == ["a", "gone"] and late == []
    ready, late = removable(drains, members, now=100, mode=PATCH)
    assert [d.member for d in late] == ["b"]


def test_signal_mode_removes_only_a_ready_run_at_the_head_of_heats_order():
    # b (second oldest) has drained but a (oldest) still works: a signal would delete a
    members = [m("a", "1"), m("b", "2", server="SHUTOFF"), m("c", "3")]
    drains = [Drain("a", "srv-a", 0, 100), Drain("b", "srv-b", 0, 100)]
    assert removable(drains, members, now=10, mode=SIGNAL) == ([], [])
    members[0] = m("a", "1", server="SHUTOFF")
    ready, _ = removable(drains, members, now=10, mode=SIGNAL)
    assert [d.member for d in ready] == ["a", "b"]


def test_patch_removal_marks_the_leavers_and_sets_desired_to_the_rest():
    r = removal(GROUP, ["c"], PATCH)
    assert r.mark_unhealthy == ("c",) and r.desired == 2 and r.signals == 0
    # a leaver already marked (an earlier update failed) is not marked again, still not counted
    members = [m("a", "1"), m("b", "2", status="CHECK_FAILED"), m("c", "3")]
    r = removal(members, ["b"], PATCH)
    assert r.mark_unhealthy == () and r.desired == 2


def test_signal_removal_is_refused_unless_it_removes_exactly_the_leavers():
    assert removal(GROUP, ["a", "b"], SIGNAL).signals == 2
    with pytest.raises(ValueError, match="signal mode removes"):
        removal(GROUP, ["c"], SIGNAL)


def test_scale_up_calls_off_the_newest_drains_that_have_not_finished():
    members = [m("a", "1", server="SHUTOFF"), m("b", "2"), m("c", "3")]
    drains = [Drain("a", "srv-a", 1, 100), Drain("b", "srv-b", 2, 100), Drain("c", "srv-c", 3, 100)]
    assert [d.member for d in to_cancel(drains, members, 1)] == ["c"]
    assert [d.member for d in to_cancel(drains, members, 5)] == ["c", "b"]

"""The drain protocol's planning (workload/autoscale/drain.py): which members leave and when they
may go. The Heat behaviour these rules follow (failed members first, then the oldest) is Heat's
own (heat/common/grouputils.py); tests/cloud/test_drain_scale_in.py proves the removal on it."""

from __future__ import annotations

import pytest

from workload.autoscale.drain import Drain, Member, choose_leavers, removable, removal_order, to_cancel


def m(name, created, status="CREATE_COMPLETE", server="ACTIVE"):
    return Member(name=name, status=status, created=created, server_id=f"srv-{name}", server_status=server)


GROUP = [m("c", "2026-12-01T10:00:03"), m("a", "2026-12-01T10:00:01"), m("b", "2026-12-01T10:00:02")]


def test_heat_removes_failed_first_then_oldest_then_by_name():
    members = GROUP + [m("z", "2026-12-01T10:00:09", status="CHECK_FAILED"), m("a2", "2026-12-01T10:00:01")]
    assert [x.name for x in removal_order(members)] == ["z", "a", "a2", "b", "c"]


def test_the_members_asked_to_drain_are_the_ones_a_scale_down_removes():
    assert [x.name for x in choose_leavers(GROUP, 2)] == ["a", "b"]
    # a member already leaving is not asked twice; the next one in Heat's order is
    assert [x.name for x in choose_leavers(GROUP, 1, leaving=["a"])] == ["b"]


def test_failed_members_are_never_asked_heat_removes_them_anyway():
    members = [m("a", "1", status="CREATE_FAILED"), m("b", "2")]
    assert [x.name for x in choose_leavers(members, 2)] == ["b"]


def test_bad_arguments_name_what_is_allowed():
    with pytest.raises(ValueError, match="k=-1 is not allowed"):
        choose_leavers(GROUP, -1)


def test_a_drain_is_ready_once_the_server_is_off_or_gone_and_times_out_at_its_deadline():
    members = [m("a", "1", server="SHUTOFF"), m("b", "2"), m("c", "3")]
    drains = [Drain("a", "srv-a", 0, 100), Drain("b", "srv-b", 0, 100), Drain("gone", None, 0, 100)]
    ready, late = removable(drains, members, now=50)
    assert [d.member for d in ready] == ["a", "gone"] and late == []
    ready, late = removable(drains, members, now=100)
    assert [d.member for d in ready] == ["a", "gone"] and [d.member for d in late] == ["b"]


def test_only_a_ready_run_at_the_head_of_heats_order_may_go():
    # b (second oldest) has drained but a (oldest) still works: a resize would delete a
    members = [m("a", "1"), m("b", "2", server="SHUTOFF"), m("c", "3")]
    drains = [Drain("a", "srv-a", 0, 100), Drain("b", "srv-b", 0, 100)]
    assert removable(drains, members, now=10) == ([], [])
    members[0] = m("a", "1", server="SHUTOFF")
    ready, _ = removable(drains, members, now=10)
    assert [d.member for d in ready] == ["a", "b"]


def test_scale_up_calls_off_the_newest_drains_that_have_not_finished():
    members = [m("a", "1", server="SHUTOFF"), m("b", "2"), m("c", "3")]
    drains = [Drain("a", "srv-a", 1, 100), Drain("b", "srv-b", 2, 100), Drain("c", "srv-c", 3, 100)]
    assert [d.member for d in to_cancel(drains, members, 1)] == ["c"]
    assert [d.member for d in to_cancel(drains, members, 5)] == ["c", "b"]

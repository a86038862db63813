"""The drain protocol's planning (workload/autoscale/drain.py): which members leave and when they
may go. The Heat behaviour these rules follow (failed members first, then the oldest) is Heat's
own (heat/common/grouputils.py); tests/cloud/test_drain_scale_in.py proves the removal on it."""

from __future__ import annotations

import pytest

from workload.autoscale.drain import (
    Drain,
    Member,
    choose_leavers,
    removable,
    removal_order,
    stranded,
    to_cancel,
)


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


def test_a_member_off_without_a_drain_leaves_like_a_drained_one():
    # b's drain was called off after its consumer had seen it (it powered off anyway); d crashed;
    # a still drains; c works; e failed in Heat (Heat removes it, it is not in Heat's size)
    members = [
        m("a", "1"),
        m("b", "2", server="SHUTOFF"),
        m("c", "3"),
        m("d", "4", server="ERROR"),
        m("e", "5", status="CREATE_FAILED", server="ERROR"),
    ]
    asked = [Drain("a", "srv-a", 0, 100)]
    found = stranded(members, asked, now=7)
    assert [(d.member, d.deadline, d.asked) for d in found] == [("b", 7, False), ("d", 7, False)]
    # they go once the run at the head of Heat's order is ready: b waits for a, d for c
    assert removable(asked + found, members, now=8) == ([], [])
    members[0] = m("a", "1", server="SHUTOFF")
    ready, late = removable(asked + found, members, now=8)
    assert [d.member for d in ready] == ["a", "b"] and late == []
    # and no drain that is not there can be called off
    assert to_cancel(asked + found, members, 5) == []


def test_a_member_not_yet_created_is_not_stranded():
    assert stranded([Member("a", "CREATE_IN_PROGRESS", "1")], [], now=0) == []

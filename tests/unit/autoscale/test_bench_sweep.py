"""Pooling over seeds, tuning by hindsight, the verdict, and the Heat actuator models."""

from __future__ import annotations

import math

import pytest

from bench.actuators import HeatPatch, HeatSignal, StackValues, load_stack, make_actuator
from bench.report import verdict
from bench.sim import Fleet, Run
from bench.sweep import pooled, tuned
from bench.worlds import Sample


def test_p95_is_pooled_over_all_seeds_waits_and_cost_is_the_mean():
    a = Run(waits=[10.0] * 100, cost=100.0, work=50.0, actions=1)
    b = Run(waits=[50.0] * 100, cost=300.0, work=50.0, actions=3)
    fig = pooled([a, b], target_wait_s=30)
    # The mean of the two p95s would be 30 (meets); pooled, 5 % of all waits are above 50.
    assert fig["p95_wait_s"] == 50.0 and not fig["meets_target"]
    assert fig["cost_worker_s"] == 200.0 and fig["utilisation"] == 0.25 and fig["actions"] == 2


def test_a_message_never_started_makes_the_p95_infinite():
    fig = pooled([Run([1.0] * 90 + [math.inf] * 10, 10.0, 1.0, 0)], target_wait_s=30)
    assert fig["p95_wait_s"] is None and not fig["meets_target"]


def row(value, cost, p95):
    return {
        "knob": "k",
        "value": value,
        "cost_worker_s": cost,
        "p95_wait_s": p95,
        "meets_target": p95 is not None and p95 <= 30,
    }


def test_tuned_by_hindsight_is_the_cheapest_sweep_value_meeting_the_target():
    rows = [row(1, 500, 5), row(2, 300, 25), row(4, 200, 31), row(8, 100, None)]
    assert tuned(rows)["value"] == 2
    assert tuned([row(4, 200, 31)]) is None


def fig(cost, p95):
    return {"cost_worker_s": cost, "p95_wait_s": p95, "meets_target": p95 <= 30, "utilisation": 0.5}


def test_verdict_compares_ours_with_the_cheapest_tuned_baseline_or_else_the_lowest_p95():
    tr = {
        "ours": fig(90, 29),
        "baselines": {"keda": [row(1, 120, 20), row(2, 100, 28)], "aws": [row(1, 150, 10)]},
    }
    v = verdict(tr)
    assert v["cheapest_tuned"]["baseline"] == "keda" and v["ours_over_cheapest_tuned"] == 0.9
    assert v["aim_met"] and v["tuned"] == {"keda": 2, "aws": 1}
    tr = {"ours": fig(90, 60), "baselines": {"keda": [row(1, 120, 50), row(2, 100, 70)]}}
    v = verdict(tr)
    assert v["cheapest_tuned"] is None and v["lowest_baseline_p95"]["p95_wait_s"] == 50
    assert not v["aim_met"]  # ours has a higher p95


IAD = StackValues("iad", up_step=2, down_step=1, up_cooldown_s=300, down_cooldown_s=600, claim_ttl_s=300)


def idle_fleet(n):
    fleet = Fleet(Sample((), ()), boot_s=0.0, max_servers=20)
    fleet.resize(n, 0.0)
    return fleet


def test_the_example_stacks_values_are_read_from_their_files():
    assert load_stack("iad") == IAD
    dfw = load_stack("dfw")
    assert (dfw.up_step, dfw.down_step, dfw.up_cooldown_s, dfw.down_cooldown_s) == (1, 1, 120, 300)
    assert dfw.claim_ttl_s == 1800


def test_heat_signal_moves_one_step_per_resize_then_waits_out_the_groups_cooldown():
    fleet, heat = idle_fleet(2), HeatSignal(IAD, power_off_s=0)
    heat.apply(fleet, 10, 0.0)
    assert fleet.size == 4  # one signal: scaleUpStep 2
    heat.apply(fleet, 10, 299.0)
    assert fleet.size == 4  # inside the 300 s cooldown every signal is ignored
    heat.apply(fleet, 1, 300.0)
    assert fleet.size == 3  # down by scaleDownStep 1; starts the 600 s cooldown
    heat.apply(fleet, 10, 899.0)
    assert fleet.size == 3
    heat.apply(fleet, 10, 900.0)
    assert fleet.size == 5
    assert not heat.reports_booting


def test_heat_patch_takes_no_action_during_an_update_and_reaches_zero_by_signal():
    fleet, heat = idle_fleet(2), HeatPatch(IAD, update_s=30, power_off_s=0)
    heat.apply(fleet, 8, 0.0)
    assert fleet.size == 8
    heat.apply(fleet, 3, 20.0)
    assert fleet.size == 8  # UPDATE_IN_PROGRESS
    heat.apply(fleet, 0, 30.0)
    assert fleet.size == 1  # desired 0 is PATCHed as 1
    heat.apply(fleet, 0, 60.0 + 299)
    assert fleet.size == 1  # the update's cooldown (300 s after it ends) ignores the signal
    heat.apply(fleet, 0, 60.0 + 300)
    assert fleet.size == 0


def test_heat_scale_in_removes_the_oldest_and_charges_it_until_it_is_off():
    fleet = idle_fleet(1)
    fleet.resize(2, 50.0)
    HeatSignal(IAD, power_off_s=3).apply(fleet, 1, 100.0)
    assert [s.asked_at for s in fleet.servers.values()] == [50.0]
    fleet.settle(200.0)
    assert fleet.cost == pytest.approx(103.0)  # asked at 0, idle when removed at 100, off 3 s later


def test_unknown_actuator_is_refused():
    with pytest.raises(ValueError, match="one of direct, signal-iad, signal-dfw, patch-iad, patch-dfw"):
        make_actuator("signal-lon")

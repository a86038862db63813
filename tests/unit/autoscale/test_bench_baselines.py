"""Each baseline's documented behaviour on small hand-made observation sequences."""

from __future__ import annotations

import pytest

from bench import baselines
from bench.baselines.aws import Aws
from bench.baselines.keda import Keda
from bench.baselines.threshold import Threshold
from bench.ours import make_ours
from bench.worlds import DEFAULT_WORLDS, World
from workload.autoscale.policy import Observation, TargetPolicy, ThresholdPolicy
from workload.queues.base import QueueStats

WORLD = World(boot_s=60, service_mean_s=1, service_cv=0.5, max_servers=100, target_wait_s=30)


def obs(t, current, free=0, claimed=0, booting=0):
    return Observation(
        now=t,
        stats=QueueStats(free=free, claimed=claimed, total=free + claimed, oldest_age=None),
        current=current,
        booting=booting,
    )


# ---------------------------------------------------------------------------- KEDA + HPA


def test_hpa_tolerance_no_change_within_ten_percent():
    keda = Keda(10, WORLD)
    assert keda.decide(obs(0, 10, free=105)) == 10  # ratio 1.05: within the tolerance
    assert keda.decide(obs(15, 10, free=111)) == 12  # ratio 1.11: ceil(111 / 10)


def test_hpa_counts_messages_in_flight_and_reads_a_fresh_metric_each_sync():
    keda = Keda(10, WORLD)
    assert keda.decide(obs(0, 2, free=0, claimed=20)) == 2
    # 15 s later (inside KEDA's 30 s pollingInterval) the HPA already sees the new value.
    assert keda.decide(obs(15, 2, free=40, claimed=20)) == 6


def test_hpa_scale_up_is_limited_to_max_of_4_pods_and_100_percent_per_sync():
    assert Keda(10, WORLD).decide(obs(0, 2, free=1000)) == 6  # +4 pods beats +100 %
    assert Keda(10, WORLD).decide(obs(0, 10, free=1000)) == 20  # +100 % beats +4 pods


def test_hpa_scale_down_takes_the_highest_recommendation_of_the_last_300_s():
    keda = Keda(10, WORLD)
    assert keda.decide(obs(0, 10, claimed=100)) == 10
    for t in range(15, 300, 15):  # load gone (5 in flight: still active for KEDA)
        assert keda.decide(obs(t, 10, claimed=5)) == 10, t
    assert keda.decide(obs(300, 10, claimed=5)) == 1  # the recommendation of t=0 left the window


def test_keda_activation_wakes_from_zero_and_cooldown_period_goes_back_to_zero():
    keda = Keda(10, WORLD)
    assert keda.decide(obs(0, 0)) == 0  # not active: stays at zero
    assert keda.decide(obs(30, 0, free=1)) == 1  # one message > activationQueueLength 0
    t = 60
    while t < 30 + 300:  # empty queue: one replica until cooldownPeriod after the last activity
        assert keda.decide(obs(t, 1)) == 1, t
        t += 15
    assert keda.decide(obs(330, 1)) == 0


# ---------------------------------------------------------------------------- AWS target tracking


def test_aws_scales_out_after_three_breaching_minutes_not_two():
    aws = Aws(10, WORLD)
    assert aws.decide(obs(0, 2, free=100)) == 2
    assert aws.decide(obs(60, 2, free=100)) == 2
    assert aws.decide(obs(120, 2, free=100)) == 10  # in proportion: ceil(100 / 10)


def test_aws_counts_warming_instances_and_does_not_add_them_twice():
    aws = Aws(10, World(boot_s=120, max_servers=100))  # warm-up = boot time
    for t in (0, 60, 120):
        desired = aws.decide(obs(t, 2, free=100))
    assert desired == 10
    # 8 warming: the metric divides by the 2 InService ones (50 > 10) but the capacity already
    # asked for covers the backlog.
    assert aws.decide(obs(180, 10, free=100)) == 10
    assert aws.decide(obs(240, 10, free=200)) == 20  # warm now: 20 per instance


def test_aws_scales_in_only_after_fifteen_minutes_below_ninety_percent():
    aws = Aws(10, WORLD)
    for k in range(14):
        assert aws.decide(obs(60 * k, 5, free=0)) == 5
    assert aws.decide(obs(60 * 14, 5, free=0)) == 1  # min capacity 1
    aws = Aws(10, WORLD)
    for k in range(20):  # 9.6 per instance: above 90 % of the target, no scale-in
        assert aws.decide(obs(60 * k, 5, free=48)) == 5


def test_aws_warm_up_blocks_scale_in():
    world = World(boot_s=1800, max_servers=100)
    aws = Aws(10, world)
    for t in (0, 60, 120):
        aws.decide(obs(t, 1, free=30))
    for k in range(3, 30):  # the 2 new instances warm for 30 min: no scale-in meanwhile
        assert aws.decide(obs(60 * k, 3, free=0)) == 3


# ---------------------------------------------------------------------------- threshold and ours


def test_threshold_is_the_seeds_rule_from_a_monitor_command_line():
    th = Threshold(5, WORLD)
    assert isinstance(th.policy, ThresholdPolicy) and th.poll_s == 10.0
    assert th.decide(obs(0, 1, free=5)) == 1
    assert th.decide(obs(10, 1, free=6)) == 2
    assert th.decide(obs(20, 2, free=50)) == 2  # 60 s cooldown after a scale-up
    assert th.decide(obs(70, 2, free=50)) == 3


def test_ours_gets_the_monitors_defaults_and_only_the_users_guesses():
    ours = make_ours(WORLD)
    assert isinstance(ours.policy, TargetPolicy)
    c = ours.policy.config
    assert (c.target_wait_s, c.boot_time_s, c.service_time_s, c.max_size, c.min_size) == (30, 60, 1, 100, 0)
    off = make_ours(WORLD, boot_x=2, service_x=0.5).policy.config
    assert (off.boot_time_s, off.service_time_s) == (120, 0.5)


def test_ours_ignores_the_benchmarks_environment(monkeypatch):
    monkeypatch.setenv("QW_WAIT_QUANTILE", "0.6")
    monkeypatch.setenv("QW_INTERVAL", "99")
    ours = make_ours(WORLD)
    assert ours.poll_s != 99 and ours.policy.config.wait_quantile != 0.6


@pytest.mark.parametrize("world", DEFAULT_WORLDS)
def test_every_baseline_sweeps_at_least_six_values(world):
    for name in baselines.BASELINES:
        values = baselines.sweep(name, world)
        assert len(values) >= 6 and values == sorted(set(values)), name


def test_a_knob_out_of_range_is_refused():
    with pytest.raises(ValueError, match="queueLength=0 is not allowed"):
        Keda(0, WORLD)
    with pytest.raises(ValueError, match="target_backlog_per_instance=-1 is not allowed"):
        Aws(-1, WORLD)

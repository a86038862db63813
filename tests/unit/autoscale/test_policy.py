"""The scaling policies as pure functions: clamps, cooldowns, hysteresis, no flapping, scale to
zero and wake, hold on missing data, config errors that name the key."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workload.autoscale.policy import (
    Observation,
    PolicyConfigError,
    PolicyState,
    TargetConfig,
    TargetPolicy,
    ThresholdConfig,
    ThresholdPolicy,
    erlang_c_servers,
    make_policy,
)
from workload.autoscale.policy.target import Look
from workload.queues.base import QueueStats


def stats(free: int, claimed: int = 0, oldest: float | None = None) -> QueueStats:
    total = free + claimed
    return QueueStats(
        free=free,
        claimed=claimed,
        total=total,
        oldest_age=oldest if oldest is not None else (5.0 if total else None),
    )


def run(policy, looks, state=None):
    """Feed (now, stats, current, booting) looks; return the decisions."""
    state = state or PolicyState()
    out = []
    for now, s, current, booting in looks:
        d = policy.decide(Observation(now, s, current, booting), state)
        state = d.state
        out.append(d)
    return out


# ------------------------------------------------------------------ threshold (the seed's rule)


def seed_policy(**kw) -> ThresholdPolicy:
    cfg = dict(
        min_size=0,
        max_size=3,
        scale_up_threshold=100,
        scale_down_threshold=0,
        up_cooldown_s=60,
        down_cooldown_s=60,
    )
    cfg.update(kw)
    return ThresholdPolicy(ThresholdConfig(**cfg))


def test_threshold_steps_up_above_j_and_down_at_or_below_n():
    p = seed_policy()
    assert p.decide(Observation(0, stats(101), 1), PolicyState()).desired == 2
    assert p.decide(Observation(0, stats(100), 1), PolicyState()).desired == 1  # not above j
    assert p.decide(Observation(0, stats(0, claimed=4), 2), PolicyState()).desired == 1
    assert p.decide(Observation(0, stats(1), 2), PolicyState()).desired == 2  # above n


def test_threshold_clamps_to_min_and_max():
    p = seed_policy(min_size=1, max_size=2, step=5)
    up = p.decide(Observation(0, stats(500), 2), PolicyState())
    assert up.desired == 2 and "max" in up.reason
    assert p.decide(Observation(0, stats(500), 1), PolicyState()).desired == 2
    assert p.decide(Observation(0, stats(0), 1), PolicyState()).desired == 1
    assert p.decide(Observation(0, stats(50), 7), PolicyState()).desired == 2  # outside: clamped in


def test_threshold_up_cooldown_then_next_step():
    p = seed_policy(max_size=10, up_cooldown_s=60)
    ds = run(p, [(0, stats(500), 1, 0), (30, stats(500), 2, 0), (61, stats(500), 2, 0)])
    assert [d.desired for d in ds] == [2, 2, 3]
    assert "cooldown" in ds[1].reason


def test_threshold_down_cooldown_counts_from_any_change():
    p = seed_policy(max_size=10, up_cooldown_s=10, down_cooldown_s=120)
    ds = run(p, [(0, stats(500), 1, 0), (60, stats(0), 2, 0), (121, stats(0), 2, 0)])
    assert [d.desired for d in ds] == [2, 2, 1]


@given(st.lists(st.integers(min_value=11, max_value=50), min_size=5, max_size=60))
def test_threshold_hysteresis_holds_between_n_and_j(frees):
    p = seed_policy(
        max_size=10, scale_up_threshold=50, scale_down_threshold=10, up_cooldown_s=0, down_cooldown_s=0
    )
    ds = run(p, [(i * 10.0, stats(f), 4, 0) for i, f in enumerate(frees)])
    assert all(d.desired == 4 for d in ds)


def test_threshold_config_errors_name_the_key():
    with pytest.raises(PolicyConfigError, match="scale_down_threshold=100.*less than scale_up_threshold"):
        ThresholdConfig(scale_up_threshold=100, scale_down_threshold=100).validate()
    with pytest.raises(PolicyConfigError, match="max_size=1.*at least min_size \\(2\\)"):
        ThresholdConfig(min_size=2, max_size=1).validate()
    with pytest.raises(PolicyConfigError, match="step=0.*from 1 to"):
        ThresholdConfig(step=0).validate()


# ------------------------------------------------------------------ missing data


@pytest.mark.parametrize(
    "policy",
    [
        seed_policy(min_size=0, max_size=5),
        TargetPolicy(TargetConfig(min_size=0, max_size=5, idle_to_zero_s=0)),
    ],
    ids=["threshold", "target"],
)
def test_missing_stats_or_group_holds(policy):
    warm = run(policy, [(t, stats(0), 3, 0) for t in range(0, 600, 10)])
    state = warm[-1].state
    d = policy.decide(Observation(600, None, 3, 0), state)
    assert d.desired == 3 and "queue stats unavailable" in d.reason
    d = policy.decide(Observation(610, stats(0), None), d.state)
    assert d.desired is None and d.action == "hold" and "group size unavailable" in d.reason


@given(
    st.lists(st.one_of(st.none(), st.integers(min_value=0, max_value=300)), min_size=1, max_size=40),
    st.integers(min_value=1, max_value=8),
)
@settings(max_examples=60, deadline=None)
def test_target_never_reaches_zero_on_missing_data(frees, current):
    """Whatever came before, a look with no stats keeps the size the group has."""
    p = TargetPolicy(TargetConfig(min_size=0, max_size=10, idle_to_zero_s=0, scale_down_window_s=0))
    state = PolicyState()
    for i, f in enumerate(frees):
        obs = Observation(i * 10.0, None if f is None else stats(f), current, 0)
        d = p.decide(obs, state)
        state = d.state
        if f is None:
            assert d.desired == current
        assert 0 <= d.desired <= 10


# ------------------------------------------------------------------ target policy


def target(**kw) -> TargetPolicy:
    cfg = dict(min_size=0, max_size=20, target_wait_s=30, boot_time_s=60, service_time_s=1.0)
    cfg.update(kw)
    return TargetPolicy(TargetConfig(**cfg))


def test_target_scales_up_for_a_backlog_within_max_and_step():
    p = target(max_size=20, max_step_up=4)
    d = p.decide(Observation(0, stats(3000, claimed=1), 1, 0), PolicyState())
    assert d.desired == 5 and d.action == "up" and "backlog 3000" in d.reason
    d = target(max_size=3, max_step_up=50).decide(Observation(0, stats(3000, 1), 1, 0), PolicyState())
    assert d.desired == 3


def test_target_counts_servers_already_booting():
    """A backlog the booting servers will clear asks for no more servers each look."""
    p = target(max_size=50)
    first = p.decide(Observation(0, stats(600, claimed=2), 2, 0), PolicyState())
    assert first.desired > 2
    again = p.decide(Observation(10, stats(600, claimed=2), first.desired, first.desired - 2), first.state)
    # The same backlog with the asked-for servers booting: no more need than before (only the
    # rest of what --max-step-up held back is added).
    assert again.estimates["wanted"] <= first.estimates["wanted"]
    assert again.desired <= first.estimates["wanted"]


def test_target_scale_down_waits_for_the_window():
    p = target(scale_down_window_s=60, idle_to_zero_s=None, min_size=1)
    looks = [(t, stats(0, claimed=1), 8, 0) for t in range(0, 200, 15)]
    ds = run(p, looks)
    first_down = next(d for d in ds if d.action == "down")
    assert first_down.state.last_now >= 60  # nothing is removed before a whole window was seen


def test_target_scale_down_needs_the_need_ten_percent_below_the_fleet():
    """30 in flight of 1 s each wants 31 servers: with the default 10 % down tolerance (the
    HPA's) a fleet of 33 or 34 holds and 36 shrinks to 34; with none, 33 shrinks to 32."""

    def after(current: int, **kw) -> int:
        p = target(max_size=60, idle_to_zero_s=None, min_size=1, **kw)
        return run(p, [(t, stats(0, claimed=30), current, 0) for t in range(0, 300, 10)])[-1].desired

    assert [after(n) for n in (31, 33, 34, 36)] == [31, 33, 34, 34]
    assert [after(n, down_tolerance=0.0) for n in (31, 33, 36)] == [31, 32, 32]


def test_target_steady_load_is_served_by_about_load_servers():
    """In flight 6 messages of 1 s each, no backlog: about 6 servers, never the max."""
    p = target(max_size=40, idle_to_zero_s=None, min_size=1)
    ds = run(p, [(t, stats(0, claimed=6), 7, 0) for t in range(0, 600, 15)])
    assert 6 <= ds[-1].desired <= 8


def test_target_scales_to_zero_after_idle_and_wakes_on_activation():
    p = target(idle_to_zero_s=120, activation_backlog=5, scale_down_window_s=30)
    ds = run(p, [(t, stats(0), 1, 0) for t in range(0, 121, 15)])
    assert [d.desired for d in ds[:-1]] == [1] * (len(ds) - 1)  # the last server stays 2 minutes
    assert ds[-1].desired == 0 and "zero" in ds[-1].reason
    state = ds[-1].state
    asleep = p.decide(Observation(200, stats(4), 0, 0), state)
    assert asleep.desired == 0 and "activation" in asleep.reason
    awake = p.decide(Observation(215, stats(5), 0, 0), asleep.state)
    assert awake.desired >= 1 and awake.action == "up"


def test_target_with_min_above_zero_never_sleeps():
    p = target(min_size=2, idle_to_zero_s=10, scale_down_window_s=0)
    ds = run(p, [(t, stats(0), 2, 0) for t in range(0, 600, 15)])
    assert all(d.desired == 2 for d in ds)


def test_target_learns_a_faster_service_time_from_a_drain():
    p = target(service_time_s=4.0, rate_smoothing_s=10)
    # The backlog came in over 1000 s (its oldest message waited that long), and drains 10/s; the
    # service estimate averages over 4 rate time constants (40 s here): two minutes of looks.
    looks = [(t, stats(1000 - 10 * t, claimed=10, oldest=1000.0 + t), 10, 0) for t in range(0, 120, 10)]
    ds = run(p, looks)
    assert ds[-1].estimates["service_time_s"] < 2.0  # 10 in flight drained 10/s: about 1 s each


def test_target_learns_a_slower_service_time_from_a_standing_backlog():
    """10 busy servers at 4 s a message hold a backlog of 300 that waited 120 s: the 1 s guess
    rises toward 4 s within ten minutes of looks (a reading moves it at most 1.25x slower), and
    the need with it."""
    p = target(service_time_s=1.0, rate_smoothing_s=10, max_size=60)
    looks = [(t, stats(300, claimed=10, oldest=124.0), 10, 0) for t in range(0, 600, 10)]
    ds = run(p, looks)
    assert ds[-1].estimates["service_time_s"] > 3.0
    assert ds[-1].estimates["load_slots"] > 8


def test_one_slow_reading_moves_the_service_estimate_little():
    """A look whose oldest message is a long one in flight reads the work as slow: one such look
    moves a right guess by a few percent; one reading is at most 1.25x slower or 2x faster."""
    p = target(service_time_s=1.0, rate_smoothing_s=10, max_size=60)
    # 10 busy, a backlog of 300 whose oldest is 124 s old: reads about 4x slower than 1 s.
    [_, d] = run(p, [(t, stats(300, claimed=10, oldest=124.0), 10, 0) for t in (0, 10)])
    assert 1.0 < d.estimates["service_time_s"] < 1.06
    reading = target(service_time_s=2.0).backlog_service
    look = Look(0.0, 10, 0, 300, 10, oldest_age=124.0)
    assert reading(look, 2.0, 10.0, 0.0) == pytest.approx(2.5)  # reads 4x slower: 1.25x
    assert reading(dataclasses.replace(look, free=30000), 2.0, 10.0, 0.0) == pytest.approx(1.0)


def test_target_service_estimate_ignores_idle_looks():
    """An empty queue says nothing about the service time: the estimate stays where it was."""
    p = target(service_time_s=3.0)
    ds = run(p, [(t, stats(0, claimed=1), 2, 0) for t in range(0, 300, 10)])
    assert all(d.estimates["service_time_s"] == 3.0 for d in ds)


def test_wait_quantile_sizes_the_steady_fleet():
    """A steady load of 12 busy slots, no backlog: a stricter quantile asks for more servers."""

    def steady(q):
        p = target(max_size=60, wait_quantile=q, target_wait_s=2, idle_to_zero_s=None, min_size=1)
        return run(p, [(t, stats(0, claimed=12), 12, 0) for t in range(0, 300, 10)])[-1]

    loose, strict = steady(0.5), steady(0.999)
    assert strict.estimates["steady_slots"] > loose.estimates["steady_slots"] >= 12
    assert strict.desired > loose.desired


@given(st.integers(min_value=0, max_value=2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_target_does_not_flap_under_noisy_steady_load(seed):
    """Closed loop on a steady 5 msg/s Poisson load: after warm-up, no up-then-down reversals
    within a down window, and few changes at all."""
    from bench import autoscale as sim

    trace = sim.Trace("steady", (0.0, 1800.0), (5.0,))
    bench_sim = sim.Ours()
    changes = []

    class Watch(sim.Ours):
        def __init__(self):
            self.policy, self.state = bench_sim.policy, PolicyState()

        def decide(self, obs):
            d = self.policy.decide(obs, self.state)
            self.state = d.state
            if d.action != "hold" and obs.now > 300:
                changes.append((obs.now, d.action))
            return d.desired

    sim.simulate(trace, Watch(), seed)
    window = bench_sim.policy.config.scale_down_window_s
    reversals = [(a, b) for a, b in zip(changes, changes[1:]) if a[1] != b[1] and b[0] - a[0] <= window]
    assert len(reversals) <= 1, changes
    assert len(changes) <= 25, changes  # 1500 s at 15 s looks = 100 looks


def test_target_config_errors_name_the_key():
    for bad, match in [
        ({"target_wait_s": 0}, "target_wait_s=0"),
        ({"wait_quantile": 1.0}, "wait_quantile=1.0.*from 0.5 to 0.999"),
        ({"worker_concurrency": 0}, "worker_concurrency=0"),
        ({"max_size": 0}, "max_size=0"),
        ({"idle_to_zero_s": -1}, "idle_to_zero_s=-1.*or unset"),
        ({"backlog_allowance": 2}, "backlog_allowance=2.*from 0 to 1"),
    ]:
        with pytest.raises(PolicyConfigError, match=match):
            TargetConfig(**bad).validate()


def test_make_policy_names_unknown_options_and_policies():
    assert make_policy("target", max_size=4).config.max_size == 4
    with pytest.raises(PolicyConfigError, match="policy='stepwise'.*target, threshold"):
        make_policy("stepwise")
    with pytest.raises(PolicyConfigError, match="scale_up_threshold=5.*an option of the target policy"):
        make_policy("target", scale_up_threshold=5)


def test_erlang_c_sizing():
    assert erlang_c_servers(0, 1, 30, 0.95) == 0
    # A load of 10 busy servers needs more than 10, and a tighter wait needs more still.
    loose, tight = erlang_c_servers(10, 1, 30, 0.95), erlang_c_servers(10, 1, 0.5, 0.95)
    assert 10 < loose < tight


def test_decisions_are_deterministic():
    """Same observations and state in, same decision out: no clock, no randomness inside."""
    rng = random.Random(4)
    looks = [
        (t, stats(rng.randrange(0, 200), rng.randrange(0, 8)), rng.randrange(0, 9), 0)
        for t in range(0, 900, 15)
    ]
    a = [dataclasses.astuple(d.state) + (d.desired,) for d in run(target(), looks)]
    b = [dataclasses.astuple(d.state) + (d.desired,) for d in run(target(), looks)]
    assert a == b

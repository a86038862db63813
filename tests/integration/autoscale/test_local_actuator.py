"""The local actuator with real consumer processes on a real local Zaqar."""

from __future__ import annotations

import os
import signal

import pytest

from devenv.procs import wait_until
from workload.autoscale.actuator import ActuatorError
from workload.autoscale.local import LocalActuator


def wait_for(check, timeout=30.0, what="condition"):
    return wait_until(check, timeout, what)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill 0; the actuator reaps, so a reaped pid is gone.
    return True


@pytest.fixture
def pool(consumer_args, tmp_path):
    act = LocalActuator(consumer_args, tmp_path / "logs", max_size=4, stop_timeout=15)
    yield act
    act.close(timeout=10)


def test_scale_out_counts_starting_then_ready_and_scale_in_stops_by_sigterm(pool):
    result = pool.apply(3, "test: up")
    assert (result.before, result.after, result.requested) == (0, 3, 3)
    state = pool.observe()
    assert state.current == 3 and state.booting <= 3
    wait_for(lambda: pool.observe().booting == 0, what="consumers to start claiming")
    pids = pool.pids()
    assert len(pids) == 3 and all(alive(p) for p in pids)

    result = pool.apply(1, "test: down")
    assert result.after == 1 and result.changed
    wait_for(lambda: pool.observe() and len(pool.exited) == 2, what="two consumers to exit")
    assert [m.returncode for m in pool.exited] == [0, 0]  # SIGTERM: a clean stop, exit 0
    assert pool.observe().current == 1 and len(pool.pids()) == 1


def test_apply_clamps_to_the_pool_bounds(pool):
    result = pool.apply(9, "test: too many")
    assert result.after == 4 and "clamped" in result.detail


def test_scale_in_releases_claims(pool, work_queue):
    work_queue.post([{"work_s": 30, "seq": i} for i in range(2)])
    pool.apply(2, "test: up")
    wait_for(lambda: work_queue.stats().claimed == 2, what="both messages to be claimed")
    pool.apply(0, "test: down")
    # The consumers give the messages back instead of sitting on their claims for 60 s.
    wait_for(lambda: not pool.pids(), timeout=20, what="consumers to exit")
    stats = wait_for(
        lambda: (lambda s: s if s.free == 2 else None)(work_queue.stats()),
        timeout=10,
        what="the claimed messages to be free again",
    )
    assert stats.claimed == 0


def test_a_dead_consumer_is_no_longer_counted(pool):
    pool.apply(2, "test: up")
    wait_for(lambda: pool.observe().booting == 0, what="consumers to start")
    victim = pool.pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: pool.observe().current == 1, what="the killed consumer to be reaped")
    assert pool.exited[-1].returncode == -signal.SIGKILL
    assert pool.apply(2, "test: replace").after == 2


def test_close_stops_every_process(consumer_args, tmp_path):
    act = LocalActuator(consumer_args, tmp_path / "logs", max_size=3)
    act.apply(3, "test")
    pids = act.pids()
    act.close(timeout=15)
    assert act.pids() == [] and act.observe().current == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_bad_bounds_are_refused(tmp_path):
    with pytest.raises(ActuatorError, match="min_size=3, max_size=2"):
        LocalActuator([], tmp_path, min_size=3, max_size=2)

"""The monitor loop's own rules, on an in-memory group and queue (no servers): the decision log,
no action while the group is updating, backoff on errors, and stop."""

from __future__ import annotations

import threading

from workload.autoscale.actuator import Actuator, ActuatorError, ApplyResult, GroupState
from workload.autoscale.monitor import Monitor
from workload.autoscale.policy import ThresholdConfig, ThresholdPolicy
from workload.queues.base import QueueStats, ServiceUnavailable


class Group(Actuator):
    """A group held in memory: resizes at once unless ``updating``; can be made to fail."""

    def __init__(self, size=1):
        self.size, self.updating, self.fail, self.applied = size, False, None, []

    def observe(self):
        if self.fail:
            raise ActuatorError(self.fail)
        return GroupState(current=self.size, updating=self.updating)

    def apply(self, desired, reason):
        self.applied.append(desired)
        before, self.size = self.size, desired
        return ApplyResult(requested=desired, before=before, after=desired)


class Queue:
    """Just the stats() of a queue driver; ``free=None`` makes it fail like a dead service."""

    name = "q"

    def __init__(self, free):
        self.free = free

    def stats(self):
        if self.free is None:
            raise ServiceUnavailable("Service Unavailable", "connection refused")
        return QueueStats(free=self.free, claimed=0, total=self.free, oldest_age=1.0)


def policy():
    return ThresholdPolicy(
        ThresholdConfig(
            min_size=0,
            max_size=5,
            scale_up_threshold=10,
            scale_down_threshold=0,
            up_cooldown_s=0,
            down_cooldown_s=0,
        )
    )


def make(free, group, clock=None):
    t = [0.0]

    def tick():
        t[0] += 1.0
        return t[0]

    records = []
    m = Monitor(
        Queue(free), policy(), group, interval=1.0, max_backoff=8.0, log=records.append, clock=clock or tick
    )
    return m, records


def test_a_decision_record_has_observation_decision_reason_and_result():
    group = Group(1)
    m, records = make(50, group)
    m.step()
    r = records[0]
    assert r["event"] == "decision" and r["policy"] == "threshold"
    assert r["observation"]["stats"]["free"] == 50 and r["observation"]["current"] == 1
    assert r["decision"]["action"] == "up" and "free 50 > 10" in r["decision"]["reason"]
    assert r["result"]["before"] == 1 and r["result"]["after"] == 2 and r["result"]["changed"]
    assert r["error"] is None


def test_no_action_while_the_group_is_updating():
    group = Group(1)
    group.updating = True
    m, records = make(50, group)
    m.step()
    assert group.applied == [] and records[0]["decision"]["action"] == "hold"
    assert "earlier change" in records[0]["decision"]["reason"]
    group.updating = False
    m.step()
    assert group.applied == [2]


def test_errors_hold_and_back_off_then_recover():
    group = Group(3)
    m, records = make(None, group)
    waits = []
    for _ in range(5):
        m.step()
        waits.append(m.next_wait())
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0]  # doubling, capped at max_backoff
    assert group.applied == [] and all(r["decision"]["desired"] == 3 for r in records)
    assert records[0]["error"].startswith("queue: Service Unavailable")
    m.queue.free = 0
    m.step()
    assert m.next_wait() == 1.0 and group.applied == [2]


def test_actuator_errors_are_logged_and_hold():
    group = Group(2)
    group.fail = "stack not found"
    m, records = make(0, group)
    m.step()
    assert records[0]["error"] == "actuator: stack not found"
    assert records[0]["decision"]["desired"] is None and group.applied == []


def test_dry_run_never_applies():
    group = Group(1)
    records = []
    m = Monitor(Queue(50), policy(), group, interval=1.0, dry_run=True, log=records.append)
    m.step()
    assert group.applied == [] and records[0]["result"] == {"dry_run": True}


def test_stop_ends_run_between_looks():
    group = Group(1)
    m = Monitor(Queue(5), policy(), group, interval=30.0, log=lambda r: None)
    thread = threading.Thread(target=m.run)
    thread.start()
    m.stop()
    thread.join(5)
    assert not thread.is_alive() and m.decisions >= 1

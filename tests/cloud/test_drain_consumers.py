"""Graceful scale-in with the real consumers (issue 15's own test): the local stack deployed with
the template baked by :class:`images.bake.Bake` (the whole loop's bake, reused when unchanged), its
group at 3, each server running the consumer container of the workload image with the drain watch
the stack renders (``QW_DRAIN_WATCH``: the metadata API); the test is the monitor (the stack's own
monitor server is off) and drives the group with the monitor's actuators.

With drain on (:class:`~workload.autoscale.drain_heat.DrainingActuator`), in signal mode (the stack
monitor's default) and in patch mode (stack updates of the desired-capacity parameter), a scale
3 -> 1 while every server is mid-message: the two asked to drain finish their message, exit, power
off (SHUTOFF in Nova) and are the two removed; the third keeps working; every message is handled
once, by the server that held it. With drain off (the plain Heat actuator, ``--no-drain``; patch
mode, one update), the same scale-in kills two handlers: their messages come back after the claim
expires and are handled again by the third, counted. All share one deploy: drain off first (3 -> 1),
then the group grows back to 3 by a second stack update (which the local Heat failed, with
"ResourcePropertiesData with id N not found", until its database stopped reusing ids:
:func:`devenv.heat.never_reuse_ids`), a scale-up calls off two drains their consumers have seen
while they work (both are taken back), drain on in signal mode, one more update back to 3, drain
on in patch mode. A member that never drains is removed at the deadline:
tests/cloud/test_drain_scale_in.py (a plain server).

Messages take :data:`WORK_S` each with one handler per server and no prefetch, so three messages
claimed means every server is mid-message, each holding one. Redeliveries are counted by who
finished what (the consumers' logs), not by a claim count: Zaqar's v2 API reports none (its claim
answer's messages carry id, href, ttl, age, body and checksum: zaqar/transport/wsgi/utils.py
``format_message``), though its store counts claims for ``_max_claim_count``.
"""

from __future__ import annotations

import time

import pytest

from devenv.cloud_demo import MemberLogs, deployed, loop_config, open_stack_queue, wait_for
from infra import hot
from workload.autoscale.drain_heat import DrainingActuator
from workload.autoscale.heat import HeatActuator

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(2400)]

WORK_S = 45.0  # seconds of work per message: the long messages
SIZE = 3


def drain_config(queue_name: str, key_pair: str) -> dict:
    """The whole loop's overrides with the group at 3 from the start, no monitor server (the test
    is the monitor), one message per server at a time, and a consumer drain timeout above a
    message's length (so a drain finishes, never releases)."""
    return {
        **loop_config(queue_name, key_pair),
        "minSize": 1,
        "desiredSize": SIZE,
        "monitorEnabled": False,
        "consumerConcurrency": 1,
        "consumerBatch": 1,
        "consumerPrefetch": 0,
        "drainTimeout": 3 * WORK_S,
        "scaleUpStep": SIZE - 1,
    }


class Loop:
    """The deployed stack seen by the test: its queue, its group's members and their logs."""

    def __init__(self, cloud, deployment, queue, logs, out):
        self.cloud, self.d, self.queue, self.logs, self.out = cloud, deployment, queue, logs, out
        self.stack = hot.group_stack_name("local")

    def heat(self, mode: str) -> HeatActuator:
        return HeatActuator(self.cloud.session("local"), self.stack, mode=mode, update_timeout=900)

    def stack_status(self) -> str:
        return self.cloud.connection("local").orchestration.find_stack(self.stack).status

    def consumers_running(self) -> list:
        """The group grown back to :data:`SIZE` by a stack update if a test before shrank it
        (asserted to complete at that size: see the module doc); once all its members run their
        consumer: the members."""
        heat = self.heat("patch")
        before = heat.observe().current
        if before < SIZE:
            grown = heat.apply(SIZE, "test: back to the starting size")
            assert (grown.before, grown.after) == (before, SIZE), grown
            assert self.stack_status() == "UPDATE_COMPLETE", self.stack_status()
        return wait_for(
            f"{SIZE} members with their consumer running",
            lambda: (m := self.logs.members()) and len(m) == SIZE and all(self.running(s) for s in m) and m,
            900,
            5,
        )

    def running(self, s) -> bool:
        out = self.logs.run(s, "docker inspect -f '{{.State.Running}}' queue-workers-consumer")
        return (out or "").strip() == "true"

    def post_and_wait_mid_message(self, n: int, work_s: float = WORK_S) -> list[str]:
        """Post ``n`` messages; return once :data:`SIZE` are claimed (every server mid-message)."""
        ids = self.queue.post([{"seq": i, "work_s": work_s} for i in range(n)])
        wait_for("every server mid-message", lambda: self.queue.stats().claimed == SIZE, 120, 1)
        return ids

    def handled(self, ids) -> dict[str, list[tuple[str, int]]]:
        """Per message of ``ids``: (server id, claim count) of each time a consumer finished it."""
        out: dict[str, list[tuple[str, int]]] = {i: [] for i in ids}
        for sid, recs in self.logs.lines.items():
            for r in recs:
                if r.get("message_id") in out and r.get("outcome") == "done":
                    out[r["message_id"]].append((sid, int(r.get("claim_count") or 0)))
        return out

    def watch(self, until, timeout: float, servers=(), look=None) -> dict[str, list[str]]:
        """Poll (``look()``, the members' logs, Nova's status of ``servers``) until ``until()``."""
        seen: dict[str, list[str]] = {s: [] for s in servers}

        def step():
            if look:
                look()
            for s in self.logs.poll():
                if s.id in seen and (not seen[s.id] or seen[s.id][-1] != s.status):
                    seen[s.id].append(s.status)

        wait_for("the phase to end", until, timeout, 2, step)
        self.logs.poll()  # the last lines, written as the phase ended
        return seen


@pytest.fixture(scope="module")
def loop(cloud, tmp_path_factory):
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    with deployed(cloud, tmp_path_factory.mktemp("drain"), drain_config, "drain", say) as dep:
        logs = MemberLogs(dep.conn, dep.key_path, None, say)
        loop = Loop(cloud, dep.deployment, open_stack_queue(cloud, dep.queue_name), logs, say)
        loop.phases = dep.phases
        yield loop


def test_drain_off_the_same_scale_in_kills_two_handlers_and_redelivers(loop):
    phases = loop.phases
    loop.consumers_running()
    phases.end(f"deploy, {SIZE} consumers running")
    ids = loop.post_and_wait_mid_message(SIZE)
    scaled_at = time.monotonic()
    loop.heat("patch").apply(1, "test: scale in, no drain")  # the monitor's --no-drain: one update
    phases.end("scale-in done")
    loop.watch(lambda: loop.queue.stats().total == 0, 2 * 60 + 4 * WORK_S + 120)
    took = time.monotonic() - scaled_at
    phases.end("every message handled")
    # Each server held one message at the scale-in; the third finished all of them: the two the
    # removed servers held were redelivered to it once their claims expired (claim TTL 60 s).
    handled = loop.handled(ids)
    (stays,) = [s.id for s in loop.logs.members()]
    assert all(h and {sid for sid, _ in h} == {stays} for h in handled.values()), handled
    redelivered = len(ids) - 1  # all but the third's own
    print(
        f"drain off: {redelivered} of {len(ids)} messages redelivered after the scale-in; all done {took:.0f} s after it"
    )


def test_a_drain_called_off_while_the_servers_work_is_taken_back(loop):
    """A scale-up while two members drain, each mid-message and having seen its drain: the monitor
    calls both off, both consumers take them back and finish their message, no server powers off,
    and the group stays at 3 with nothing leaving."""
    phases = loop.phases
    members = loop.consumers_running()
    phases.end(f"{SIZE} consumers running")
    records: list[dict] = []
    actuator = DrainingActuator(loop.heat("signal"), deadline_s=6 * WORK_S, log=records.append)
    # Long enough for a drain and its call-off to be seen (each up to the metadata cache's 15 s
    # plus the watch's 5 s, plus this test's reading of the logs) while the message still runs.
    ids = loop.post_and_wait_mid_message(SIZE, work_s=2 * WORK_S)
    assert "asked 2 to drain" in actuator.apply(1, "test: scale in").detail
    asked = [r["server"] for r in records if r["event"] == "drain"]

    def logged(event):
        return lambda: all(any(r["event"] == event for r in loop.logs.lines.get(s, [])) for s in asked)

    loop.watch(logged("drain"), 120)
    phases.end("both drains seen")
    result = actuator.apply(SIZE, "test: the load is back")
    assert "called off 2 drain(s)" in result.detail, result.detail
    seen = loop.watch(logged("drain-called-off"), 120, asked)
    phases.end("both drains called off")
    loop.watch(lambda: loop.queue.stats().total == 0, 3 * WORK_S)
    phases.end("backlog done")

    taken = [r for s in asked for r in loop.logs.lines[s] if r["event"] == "drain-called-off"]
    assert [r["taken_back"] for r in taken] == [True, True], taken
    handled = loop.handled(ids)
    assert all(len(h) == 1 for h in handled.values()), handled  # each once, by the server that held it
    assert {h[0][0] for h in handled.values()} == {s.id for s in members}
    state = actuator.observe()
    assert (state.current, state.leaving) == (SIZE, 0)
    assert all("SHUTOFF" not in statuses for statuses in seen.values()), seen
    assert {s.id for s in loop.logs.members()} == {s.id for s in members}
    assert not any(r["event"] in ("drained-removed", "drain-timeout") for r in records), records


@pytest.mark.parametrize("mode", ["signal", "patch"])
def test_drain_on_every_message_finishes_on_its_first_claim(loop, mode):
    phases = loop.phases
    members = loop.consumers_running()
    phases.end(f"{SIZE} consumers running again ({mode})")
    # The monitor's DrainingActuator, 3 -> 1: in signal mode (the stack's monitor's default) by
    # scale-down signals, in patch mode by updates of the stack's desired-capacity parameter.
    records: list[dict] = []
    actuator = DrainingActuator(loop.heat(mode), deadline_s=6 * WORK_S, log=records.append)
    ids = loop.post_and_wait_mid_message(SIZE + 1)  # one more: the backlog the third goes on with
    asked_at = time.monotonic()
    assert "asked 2 to drain" in actuator.apply(1, "test: scale in").detail
    asked = [r["server"] for r in records if r["event"] == "drain"]
    stays = ({s.id for s in members} - set(asked)).pop()
    seen = loop.watch(lambda: actuator.observe().leaving == 0, 6 * WORK_S + 300, asked)
    drained_in = time.monotonic() - asked_at
    phases.end(f"scale-in done ({drained_in:.0f} s after the drain was asked)")
    loop.watch(lambda: loop.queue.stats().total == 0, 4 * WORK_S)
    phases.end("backlog done")

    removed = [r for r in records if r["event"] == "drained-removed"]
    assert not any(r["event"] == "drain-timeout" for r in records), records
    assert removed and all(st == "SHUTOFF" for r in removed for st in r["server_status"].values()), removed
    left = loop.logs.members()
    assert [s.id for s in left] == [stays] and left[0].status == "ACTIVE"
    if mode == "patch":  # each removal was a stack update, and the last one completed
        assert loop.stack_status() == "UPDATE_COMPLETE", loop.stack_status()
    assert not loop.stack_status().endswith("FAILED"), loop.stack_status()
    # Every message is gone from the queue, none was finished twice, and the third finished exactly
    # two (its own, then the backlog): the other two were finished by the two that drained, which
    # held them (a drained server's last line is caught only if read before it powered off).
    handled = loop.handled(ids)
    assert all(len(h) <= 1 for h in handled.values()), handled
    by_stays = [i for i, h in handled.items() if h and h[0][0] == stays]
    assert len(by_stays) == 2, handled
    caught = sum(1 for h in handled.values() if h and h[0][0] in asked)
    print(
        f"drain on ({mode}): {len(ids)} messages, none handled twice; drained in {drained_in:.0f} s; "
        f"Nova statuses of the drained: {seen}; their finishes read before power-off: {caught} of 2"
    )

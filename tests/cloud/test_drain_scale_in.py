"""Graceful scale-in on the real local cloud (the monitor's side of the drain protocol,
workload/autoscale/drain_heat.py): a Heat group of real Nova servers; the monitor's actuator
asks the members that will leave to drain (server metadata ``qw_drain`` through Nova's API),
each of those servers reads it from the metadata API at 169.254.169.254 (Nova's own, reached from
the server's address) and powers itself off, Nova shows SHUTOFF, and the actuator removes exactly
those members, in patch mode (one stack update) and in alarm mode (the scale-down policy's
pre-signed alarm_url); a member that never drains is removed at the deadline (signal mode; signal
mode's drain with the real consumers is tests/cloud/test_drain_consumers.py).

On the servers, a small unit written by cloud-init plays the consumer's part of the protocol (poll
the metadata, power off once asked): that keeps these tests to plain debian-12 servers and
minutes. The real consumer container in servers of the baked template taking part (drain on: every
message finished once; drain off: the redeliveries it prevents) is
tests/cloud/test_drain_consumers.py; the monitor's credential with the rendered access rules, on
the real Nova and Heat, is tests/cloud/test_monitor_access_rules.py; the consumer's side against a
real queue is tests/integration/workload/test_drain_request.py; a scale-up calling drains off
while their servers work is in test_drain_consumers.py too. What is not proved on the cloud: a
member that never drains while holding a real message (here it holds none; the claim expiry
that then brings its message back is what the drain-off half of test_drain_consumers.py shows).
"""

from __future__ import annotations

import time
import uuid

import pytest
from keystoneauth1 import adapter

from devenv import cloud as local_cloud
from devenv.heat import wait_no_deletions, wait_stack
from devenv.procs import wait_until
from workload.autoscale.drain import DRAIN_KEY
from workload.autoscale.drain_heat import DrainingActuator
from workload.autoscale.heat import HeatActuator

pytestmark = pytest.mark.cloud

WATCHER = """#cloud-config
write_files:
- path: /usr/local/bin/qw-drain-watch
  permissions: '0755'
  content: |
    #!/bin/sh
    # The consumer's part, reduced to the protocol: once the metadata asks, power off.
    while sleep 1; do
      if curl -fsS http://169.254.169.254/openstack/latest/meta_data.json | grep -q '"qw_drain"'; then
        echo "qw: drain requested" > /dev/console
        exec systemctl poweroff
      fi
    done
- path: /etc/systemd/system/qw-drain-watch.service
  content: |
    [Service]
    ExecStart=/usr/local/bin/qw-drain-watch
runcmd:
- [systemctl, start, --no-block, qw-drain-watch.service]
"""


def group_template(user_data: str) -> dict:
    return {
        "heat_template_version": "2018-08-31",
        "parameters": {"desired": {"type": "number", "default": 3}},
        "resources": {
            "workers": {
                "type": "OS::Heat::AutoScalingGroup",
                "properties": {
                    "min_size": 0,
                    "max_size": 3,
                    "desired_capacity": {"get_param": "desired"},
                    "cooldown": 0,
                    "resource": {
                        "type": "OS::Nova::Server",
                        "properties": {
                            "image": local_cloud.BASE_IMAGE,
                            "flavor": "m1.tiny",
                            "networks": [{"network": local_cloud.PROVIDER_NETWORK}],
                            "user_data_format": "RAW",
                            "user_data": user_data,
                        },
                    },
                },
            },
            "scale_up": {
                "type": "OS::Heat::ScalingPolicy",
                "properties": {
                    "adjustment_type": "change_in_capacity",
                    "scaling_adjustment": 1,
                    "auto_scaling_group_id": {"get_resource": "workers"},
                    "cooldown": 0,
                },
            },
            "scale_down": {
                "type": "OS::Heat::ScalingPolicy",
                "properties": {
                    "adjustment_type": "change_in_capacity",
                    "scaling_adjustment": -1,
                    "auto_scaling_group_id": {"get_resource": "workers"},
                    "cooldown": 0,
                },
            },
        },
        "outputs": {"current_size": {"value": {"get_attr": ["workers", "current_size"]}}},
    }


@pytest.fixture
def group(cloud, member):
    """Factory: ``group(size, user_data, name=None)`` -> (stack name, heat adapter); deleted after the test."""
    session = cloud.session("local")
    heat = adapter.Adapter(session, service_type="orchestration", interface="public")
    made = []

    def make(size: int, user_data: str, name: str | None = None):
        wait_no_deletions(heat)
        name = name or f"qw-drain-{uuid.uuid4().hex[:8]}"
        resp = heat.post(
            "/stacks",
            json={
                "stack_name": name,
                "template": group_template(user_data),
                "parameters": {"desired": size},
                "timeout_mins": 15,
            },
        )
        path = f"/stacks/{name}/{resp.json()['stack']['id']}"
        made.append(path)
        stack = wait_stack(heat, path, 900)
        assert stack["stack_status"] == "CREATE_COMPLETE", stack.get("stack_status_reason")
        return name, heat

    yield make
    for path in made:
        heat.delete(path, raise_exc=False)
        wait_stack(heat, path, 900)


def _servers(member, ids):
    return {s.id: s for s in member.compute.servers(details=True) if s.id in ids}


def _watch(actuator, member, leavers, until, timeout):
    """Run the monitor's looks (observe) until ``until(state)``; record each leaver's statuses."""
    seen: dict[str, set[str]] = {i: set() for i in leavers}
    deadline = time.monotonic() + timeout
    while True:
        state = actuator.observe()
        for sid, s in _servers(member, set(leavers)).items():
            seen[sid].add(s.status)
        if until(state):
            return state, seen
        assert time.monotonic() < deadline, f"no end within {timeout} s: {state}, {seen}"
        time.sleep(2)


def test_patch_mode_drains_the_leaving_members_then_removes_exactly_them(cloud, member, group):
    name, _ = group(3, WATCHER)
    records = []
    actuator = DrainingActuator(
        HeatActuator(cloud.session("local"), name, mode="patch", update_timeout=600),
        deadline_s=600,
        log=records.append,
    )
    state = actuator.observe()
    assert (state.current, state.leaving) == (3, 0)
    members_before, _ = actuator._look()
    servers = [m.server_id for m in members_before]
    wait_until(
        lambda: all(s.status == "ACTIVE" for s in _servers(member, set(servers)).values()),
        300,
        "3 ACTIVE servers",
    )

    result = actuator.apply(1, "test: backlog gone")
    assert result.after == 1 and "asked 2 to drain" in result.detail
    asked = [r["server"] for r in records if r["event"] == "drain"]
    oldest = sorted(members_before, key=lambda m: (m.created, m.name))
    assert asked == [x.server_id for x in oldest[:2]]  # the two a resize removes: the oldest
    # the request is on exactly those servers, in Nova, where the servers read it
    meta = {sid: s.metadata for sid, s in _servers(member, set(servers)).items()}
    assert {sid for sid, m in meta.items() if DRAIN_KEY in m} == set(asked)
    stays = (set(servers) - set(asked)).pop()
    # while they drain, the policy sees the capacity that stays
    state = actuator.observe()
    assert state.current + state.leaving == 3 and state.current == 1

    state, seen = _watch(actuator, member, asked, lambda st: st.leaving == 0, 600)
    assert state.current == 1
    done = [r for r in records if r["event"] == "drained-removed"]
    # each powered itself off (the metadata API reached it) before the resize removed it
    assert all(st == "SHUTOFF" for r in done for st in r["server_status"].values()), done
    left = _servers(member, set(servers))
    assert set(left) == {stays} and left[stays].status == "ACTIVE"
    assert done and sorted(sum((r["members"] for r in done), [])) == sorted(
        m.name for m in members_before if m.server_id in asked
    )
    assert not any(r["event"] == "drain-timeout" for r in records)


def test_signal_mode_removes_a_member_that_never_drains_at_the_deadline_and_one_that_stopped(
    cloud, member, group
):
    name, _ = group(3, "#cloud-config\n{}\n")  # no watcher: a member never drains
    records = []
    actuator = DrainingActuator(
        HeatActuator(cloud.session("local"), name, mode="signal"), deadline_s=20, log=records.append
    )
    members_before, _ = actuator._look()
    oldest = min(members_before, key=lambda m: (m.created, m.name))
    result = actuator.apply(2, "test")
    assert "asked 1 to drain" in result.detail
    asked = [r["server"] for r in records if r["event"] == "drain"]
    assert asked == [oldest.server_id]  # signal mode: the one Heat removes
    state, seen = _watch(actuator, member, asked, lambda st: st.leaving == 0, 300)
    assert state.current == 2
    assert "SHUTOFF" not in seen[asked[0]]  # it never drained ...
    assert any(r["event"] == "drain-timeout" and r["server"] == asked[0] for r in records)  # ... and said so
    servers = {m.server_id for m in members_before}
    assert asked[0] not in _servers(member, servers)

    # A member that stops with no drain asked (a crash, or a drain called off after its consumer
    # had exited) holds no work: it is not counted as
    # capacity, and it goes like a drained one. Stopped here through Nova, as the project.
    remaining = sorted(
        (m for m in members_before if m.server_id != asked[0]), key=lambda m: (m.created, m.name)
    )
    stopped, works = remaining[0].server_id, remaining[1].server_id
    member.compute.stop_server(stopped)
    state, seen = _watch(actuator, member, [stopped], lambda st: st.leaving == 0 and st.current == 1, 300)
    assert stopped not in _servers(member, servers)
    assert _servers(member, servers)[works].status == "ACTIVE"
    gone = [r for r in records if r["event"] == "drained-removed" and r["unasked"]]
    assert [(r["unasked"], r["server_status"]) for r in gone] == [
        ([remaining[0].name], {remaining[0].name: "SHUTOFF"})
    ], records


def test_alarm_mode_drains_the_member_heat_removes_then_removes_exactly_it(cloud, member, group):
    """Alarm mode resizes through the scale-down policy's pre-signed alarm_url (heat-api-cfn, no
    token: what an alarm service calls): the member asked to drain is the one that resize removes
    (the oldest), it powers off first, and it is the one gone."""
    name, _ = group(2, WATCHER)
    records = []
    actuator = DrainingActuator(
        HeatActuator(cloud.session("local"), name, mode="alarm"), deadline_s=600, log=records.append
    )
    members_before, _ = actuator._look()
    servers = {m.server_id for m in members_before}
    oldest = min(members_before, key=lambda m: (m.created, m.name))
    wait_until(
        lambda: all(s.status == "ACTIVE" for s in _servers(member, servers).values()), 300, "2 ACTIVE servers"
    )
    result = actuator.apply(1, "test: backlog gone")
    assert "asked 1 to drain" in result.detail
    asked = [r["server"] for r in records if r["event"] == "drain"]
    assert asked == [oldest.server_id]
    state, seen = _watch(actuator, member, asked, lambda st: st.leaving == 0, 600)
    assert state.current == 1
    done = [r for r in records if r["event"] == "drained-removed"]  # it drained (powered itself off) ...
    assert [r["members"] for r in done] == [[oldest.name]]
    assert all(st == "SHUTOFF" for r in done for st in r["server_status"].values()), done
    left = _servers(member, servers)  # ... and it, not the other, is gone
    assert set(left) == servers - {oldest.server_id}
    assert all(s.status == "ACTIVE" for s in left.values())
    assert not any(r["event"] == "drain-timeout" for r in records)

"""The Heat actuator against a real Heat 27 (engine + APIs) and a real Keystone on loopback.

Heat resizes asynchronously and never tells the caller about cooldown or clamping, so every
assertion here is on the size Heat itself reports back (the stack's current_size output).
"""

from __future__ import annotations

import argparse
import time

import pytest
import requests

from workload.autoscale.actuator import ActuatorError
from workload.autoscale.heat import HeatActuator

pytestmark = pytest.mark.controlplane


def actuator(session, stack, mode="signal", **kw) -> HeatActuator:
    return HeatActuator(session, stack["stack_name"], mode=mode, settle_timeout=20, **kw)


def test_discovers_group_policies_and_bounds_from_the_template(heat_session, shared_stack):
    stack = shared_stack
    act = actuator(heat_session, stack)
    assert (act.group, act.up_policy, act.down_policy) == ("workers", "scale_up", "scale_down")
    assert act.desired_parameter == "desired_capacity"
    state = act.observe()
    assert (state.current, state.min_size, state.max_size, state.updating) == (2, 1, 4, False)
    # By id works as well as by name.
    assert HeatActuator(heat_session, stack["id"]).stack_name == stack["stack_name"]


def test_signals_scale_up_and_down_and_the_size_is_read_back(heat_session, stacks):
    stack = stacks.create(min_size=1, max_size=4, desired_capacity=1, cooldown=0)
    act = actuator(heat_session, stack)
    up = act.apply(3, "backlog")
    assert (up.before, up.after, up.changed) == (1, 3, True)
    assert stacks.output(stack, "current_size") == 3
    down = act.apply(2, "idle")
    assert (down.before, down.after) == (3, 2)
    assert act.observe().current == 2 == stacks.output(stack, "current_size")


def test_signals_are_clamped_by_heat_at_max_and_min(heat_session, stacks):
    stack = stacks.create(min_size=1, max_size=2, desired_capacity=1, cooldown=0)
    act = actuator(heat_session, stack)
    high = act.apply(5, "asks beyond max_size")
    assert high.after == 2
    assert "max_size 2" in high.detail
    # A signal sent straight to the policy at the bound changes nothing either.
    heat_session.post(stacks.output(stack, "scale_up_signal_url"))
    time.sleep(3)
    assert act.observe().current == 2
    low = act.apply(0, "asks below min_size")
    assert low.after == 1
    assert "min_size 1" in low.detail
    assert stacks.output(stack, "current_size") == 1


def test_a_signal_inside_the_cooldown_changes_nothing(heat_session, stacks):
    stack = stacks.create(min_size=1, max_size=4, desired_capacity=1, cooldown=300)
    act = actuator(heat_session, stack)
    first = act.apply(2, "backlog")
    assert (first.before, first.after) == (1, 2)
    second = act.apply(3, "still a backlog")
    assert (second.before, second.after, second.changed) == (2, 2, False)
    assert "cooldown" in second.detail
    # The raw signal answers 200 like any other; only the size shows it was ignored.
    resp = heat_session.post(stacks.output(stack, "scale_down_signal_url"), raise_exc=False)
    assert resp.status_code == 200, resp.text
    time.sleep(4)
    assert stacks.output(stack, "current_size") == 2


def test_alarm_url_scales_without_a_token(heat_session, stacks):
    stack = stacks.create(min_size=1, max_size=4, desired_capacity=1, cooldown=0)
    act = actuator(heat_session, stack, mode="alarm")
    result = act.apply(2, "backlog")
    assert (result.before, result.after) == (1, 2)
    assert "alarm to scale_up" in result.detail
    # The pre-signed URL needs nothing else: a plain POST, no Keystone token, scales it again.
    resp = requests.post(stacks.output(stack, "scale_up_alarm_url"), timeout=30)
    assert resp.status_code == 200
    deadline = time.monotonic() + 20
    while act.observe().current != 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert act.observe().current == 3
    # A tampered signature is refused by the CFN API and changes nothing.
    bad = stacks.output(stack, "scale_down_alarm_url").replace("Signature=", "Signature=x")
    assert requests.post(bad, timeout=30).status_code in (401, 403)
    time.sleep(2)
    assert act.observe().current == 3


def test_patch_reaches_update_complete_at_the_requested_size(heat_session, stacks):
    stack = stacks.create(min_size=1, max_size=4, desired_capacity=1)
    act = actuator(heat_session, stack, mode="patch")
    result = act.apply(3, "backlog")
    assert (result.before, result.after) == (1, 3)
    assert "UPDATE_COMPLETE" in result.detail
    assert stacks.wait(act._path)["stack_status"] == "UPDATE_COMPLETE"
    assert stacks.output(stack, "current_size") == 3
    # Heat refuses desired_capacity outside min..max; the actuator clamps first.
    clamped = act.apply(9, "spike")
    assert (clamped.requested, clamped.after) == (9, 4)
    assert "clamped" in clamped.detail


def test_observe_reports_updating_while_the_stack_updates(heat_session, stacks):
    stack = stacks.create(min_size=1, max_size=4, desired_capacity=1)
    act = actuator(heat_session, stack, mode="patch")
    path = f"/stacks/{stack['stack_name']}/{stack['id']}"
    stacks.api.patch(path, json={"parameters": {"desired_capacity": 4}})
    seen_updating, held = False, None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = act.observe()
        if state.updating:
            seen_updating = True
            held = act.apply(1, "would scale in")  # must not act while Heat is busy
            break
        if stacks.wait(path)["stack_status"] == "UPDATE_COMPLETE" and state.current == 4:
            break
    assert seen_updating, "the stack never showed UPDATE_IN_PROGRESS to observe()"
    assert held is not None and held.after == held.before and "in progress" in held.detail
    stacks.wait(path)
    assert act.observe().current == 4


def test_errors_carry_heats_own_message(heat_session, shared_stack):
    with pytest.raises(ActuatorError, match="could not be found"):
        HeatActuator(heat_session, "no-such-stack")
    stack = shared_stack
    with pytest.raises(ActuatorError, match="mode 'webhook' is not one of"):
        actuator(heat_session, stack, mode="webhook")
    with pytest.raises(ActuatorError, match="not an AutoScalingGroup"):
        actuator(heat_session, stack, group="scale_up")


def test_from_args_uses_clouds_yaml(controlplane, shared_stack, monkeypatch):
    stack = shared_stack
    for key, value in controlplane.env().items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    HeatActuator.add_arguments(parser)
    args = parser.parse_args(["--stack", stack["stack_name"], "--heat-mode", "patch"])
    act = HeatActuator.from_args(args)
    assert act.mode == "patch" and act.observe().current == 2
    with pytest.raises(ActuatorError, match="--stack"):
        HeatActuator.from_args(parser.parse_args([]))


def test_the_waits_of_an_update_sleep_through_the_sleep_it_is_given(
    controlplane, stacks, monkeypatch, tmp_path
):
    """The monitor hands its heartbeat's sleep to the actuator: a PATCH it waits for beats, so a
    long stack update does not make the monitor's container look stuck."""
    from workload.heartbeat import Heartbeat

    stack = stacks.create(min_size=1, max_size=4, desired_capacity=1)
    for key, value in controlplane.env().items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    HeatActuator.add_arguments(parser)
    beat = tmp_path / "heartbeat"
    act = HeatActuator.from_args(
        parser.parse_args(["--stack", stack["stack_name"], "--heat-mode", "patch"]),
        sleep=Heartbeat(str(beat), every=0.1).sleep,
    )
    assert not beat.exists()
    result = act.apply(2, "backlog")
    assert (result.before, result.after) == (1, 2)
    assert beat.is_file()  # written only by the sleeps of the wait for UPDATE_COMPLETE


def test_deleting_the_stack_leaves_nothing(controlplane, heat_session, stacks):
    from keystoneauth1 import adapter

    identity = adapter.Adapter(
        controlplane.session("local-admin"), service_type="identity", interface="public"
    )
    domain = identity.get("/domains", params={"name": "heat"}).json()["domains"][0]["id"]

    def listed(collection, **params):
        body = identity.get(f"/{collection}", params=params).json()
        return {o["id"]: o for o in body[collection.rsplit("/", 1)[-1]]}

    stacks.wait_deletions()  # other tests' stacks: a delete in progress holds a trust of its own
    users_before = listed("users", domain_id=domain)
    trustor = heat_session.get_user_id()
    trusts_before = listed("OS-TRUST/trusts", trustor_user_id=trustor)
    stack = stacks.create(desired_capacity=2)
    act = actuator(heat_session, stack, mode="alarm")
    act._alarm_url("scale_up")  # resolving alarm_url gives the policy its stack-domain user and keys
    # Heat's per-stack project in its stack-user domain: "<project id>-<stack id>", cut at 64.
    project_name = f"{heat_session.get_project_id()}-{stack['id']}"[:64]
    projects = {p["name"]: p for p in listed("projects", domain_id=domain).values()}
    assert project_name in projects
    stack_users = set(listed("users", domain_id=domain)) - set(users_before)
    stack_trusts = set(listed("OS-TRUST/trusts", trustor_user_id=trustor)) - set(trusts_before)
    assert stack_users and stack_trusts, (stack_users, stack_trusts)

    done = stacks.delete(f"/stacks/{stack['stack_name']}/{stack['id']}")
    assert done["stack_status"] == "DELETE_COMPLETE"
    # The list shows it as DELETE_COMPLETE for a moment (the engine is still finishing), then not.
    deadline = time.monotonic() + 30
    while stack["id"] in {s["id"] for s in stacks.api.get("/stacks").json()["stacks"]}:
        assert time.monotonic() < deadline, "the deleted stack is still listed"
        time.sleep(0.5)
    assert stacks.api.get(f"/stacks/{stack['stack_name']}", raise_exc=False).status_code == 404
    assert project_name not in {p["name"] for p in listed("projects", domain_id=domain).values()}
    assert not stack_users & set(listed("users", domain_id=domain))
    assert not stack_trusts & set(listed("OS-TRUST/trusts", trustor_user_id=trustor))

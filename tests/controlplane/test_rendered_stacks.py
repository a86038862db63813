"""Each example stack's own HOT template in a real Heat 27, scaled by the monitor's Heat actuator.

For every stack ``python -m infra render`` knows (one ``Pulumi.<stack>.yaml`` each), the template
it prints is created in the session's real Keystone + Heat (``controlplane``; no Nova, no Glance)
and driven by :class:`workload.autoscale.heat.HeatActuator`, built from the monitor's own options
and clouds.yaml:

* ``observe()`` reads the size the stack file configures (``desiredSize``) and its min/max;
* Heat counts the creation as a resize: a signal right after it falls inside the cooldown and
  changes nothing;
* a scale-up signal adds ``scaleUpStep`` servers, a second one inside the cooldown changes nothing;
* a PATCH outside min..max is refused by the template's parameter range and breaks nothing;
* PATCH mode (the ``desired`` parameter) reaches UPDATE_COMPLETE at the requested size;
* signals never take the group past ``maxSize``;
* deleting the stack removes the group's nested stack, every resource, the stack-domain project
  and users Heat made for the policies, and the trust Heat holds for the stack.

Two things differ from what ``pulumi up`` would send, both said where they are done: the image
parameter's ``glance.image`` constraint is removed (there is no Glance to ask), and
``scaleUpCooldown`` (the group's and the scale-up policy's cooldown) is set to a few seconds in
the stack's config, as a user would with ``pulumi config set scaleUpCooldown``; the example
values (120 s and 300 s) would make this file take many minutes. Servers and the server group are
mapped to ``OS::Heat::None`` through the stack environment's ``resource_registry`` (no Nova).

Every size asserted is the one Heat reports (the stack's ``current_size`` output), since Heat
answers every signal with 200 whatever it does with it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import email.utils
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from heat_testlib import PARAMETERS

from devenv.heat import NO_NOVA_ENVIRONMENT as NO_NOVA
from devenv.heat import wait_no_deletions, wait_stack, without_glance
from infra import hot
from infra.config import StackConfig, load
from infra.render import render, stack_names, stack_settings
from workload.autoscale.heat import HeatActuator

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
STACKS = stack_names()

# Seconds of scaleUpCooldown the stacks are created with: long enough that a second signal lands
# inside it on a busy 2-core machine, short enough to wait out twice per stack.
COOLDOWN = 15


@dataclasses.dataclass
class Deployed:
    name: str  # example stack (iad, dfw)
    cfg: StackConfig  # its config as the user wrote it
    stack_name: str
    stack_id: str
    path: str  # /stacks/<name>/<id>
    user_project_id: str  # Heat's stack-domain project for this stack's policy users
    trusts_before: set  # the demo user's trusts before the stack existed


@pytest.fixture(scope="module")
def demo_session(controlplane):
    """The demo user (role member on project demo): the owner of the stacks."""
    return controlplane.session("local")


@pytest.fixture(scope="module")
def orchestration(demo_session):
    from keystoneauth1 import adapter

    return adapter.Adapter(demo_session, service_type="orchestration", interface="public")


@pytest.fixture(scope="module")
def identity(controlplane):
    """Keystone as admin: to see the stack-domain users, projects and trusts Heat makes."""
    from keystoneauth1 import adapter

    return adapter.Adapter(controlplane.session("local-admin"), service_type="identity", interface="public")


def heat_size(api, path: str) -> int:
    return api.get(f"{path}/outputs/{hot.OUT_CURRENT_SIZE}").json()["output"]["output_value"]


def cooldown_end(api, path: str) -> tuple[str | None, dt.datetime]:
    """The group's cooldown end as Heat stores it (naive UTC ISO) and Heat's clock (Date header)."""
    resp = api.get(f"{path}/resources/{hot.GROUP}/metadata")
    ends = list((resp.json()["metadata"] or {}).get("cooldown_end") or {})
    now = email.utils.parsedate_to_datetime(resp.headers["Date"]).astimezone(dt.UTC).replace(tzinfo=None)
    return (ends[0] if ends else None), now


def wait_cooldown_over(api, path: str) -> None:
    end, now = cooldown_end(api, path)
    if end is not None:
        left = (dt.datetime.fromisoformat(end) - now).total_seconds()
        if left > -1.0:
            time.sleep(left + 1.5)  # the Date header has whole seconds


def trusts(identity, user_id: str) -> set:
    body = identity.get("/OS-TRUST/trusts", params={"trustor_user_id": user_id}).json()
    return {t["id"] for t in body["trusts"]}


def stack_domain(identity) -> str:
    return identity.get("/domains", params={"name": "heat"}).json()["domains"][0]["id"]


def policy_users(identity, project_id: str) -> list[str]:
    """Users Heat made in its stack-user domain for one stack (its policies' signal users)."""
    users = identity.get("/users", params={"domain_id": stack_domain(identity)}).json()["users"]
    return sorted(u["name"] for u in users if u.get("default_project_id") == project_id)


def actuator(controlplane, monkeypatch, stack_name: str, mode: str) -> HeatActuator:
    """Built the way the monitor builds it: its own options, credentials from clouds.yaml."""
    import argparse

    for key, value in controlplane.env().items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    HeatActuator.add_arguments(parser)
    return HeatActuator.from_args(
        parser.parse_args(["--stack", stack_name, "--heat-mode", mode, "--heat-timeout", "120"])
    )


@pytest.fixture(scope="module", params=STACKS)
def deployed(request, orchestration, identity, demo_session):
    """The example stack's rendered template created in Heat; deleted at the end if a test has not."""
    name = request.param
    printed = subprocess.run(
        [sys.executable, "-m", "infra", "render", "--stack", name],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    example = render(name).template
    assert yaml.safe_load(printed.stdout) == example  # what the CLI prints is what render returns

    # The stack file's config with a shorter scaleUpCooldown, as `pulumi config set` would make it.
    overrides, secret_keys = stack_settings(name, scaleUpCooldown=COOLDOWN)
    template = render(name, cfg_override=overrides, secret_keys=secret_keys).template
    expected = copy.deepcopy(example)
    for resource in (hot.GROUP, hot.SCALE_UP):
        expected["resources"][resource]["properties"]["cooldown"] = COOLDOWN
    assert template == expected, "the cooldown override changed more than the cooldowns"
    template = without_glance(template)

    wait_no_deletions(orchestration)
    trusts_before = trusts(identity, demo_session.get_user_id())
    stack_name = f"queue-workers-{name}-{uuid.uuid4().hex[:8]}"
    resp = orchestration.post(
        "/stacks",
        json={
            "stack_name": stack_name,
            "template": template,
            "environment": NO_NOVA,
            "parameters": PARAMETERS,
            "timeout_mins": 5,
        },
    )
    stack_id = resp.json()["stack"]["id"]
    path = f"/stacks/{stack_name}/{stack_id}"
    try:
        stack = wait_stack(orchestration, path)
        assert stack["stack_status"] == "CREATE_COMPLETE", stack.get("stack_status_reason")
        yield Deployed(
            name,
            load(*stack_settings(name)),
            stack_name,
            stack_id,
            path,
            stack["stack_user_project_id"],
            trusts_before,
        )
    finally:
        orchestration.delete(path, raise_exc=False)
        wait_stack(orchestration, path)


def test_the_actuator_scales_the_rendered_group_within_min_max_and_cooldown(
    controlplane, monkeypatch, orchestration, deployed
):
    api, path, cfg = orchestration, deployed.path, deployed.cfg
    low, high, step = cfg.min_size, cfg.max_size, cfg.scale_up_step
    signal = actuator(controlplane, monkeypatch, deployed.stack_name, "signal")
    assert (signal.group, signal.up_policy, signal.down_policy) == (hot.GROUP, hot.SCALE_UP, hot.SCALE_DOWN)
    assert signal.desired_parameter == hot.P_DESIRED

    # The configured size and bounds, read from the stack Heat made.
    state = signal.observe()
    assert (state.current, state.min_size, state.max_size, state.updating) == (
        cfg.desired_size,
        low,
        high,
        False,
    )
    assert heat_size(api, path) == cfg.desired_size

    # Heat counts the creation as a resize: a signal right after it is inside the cooldown.
    end_at_create, _ = cooldown_end(api, path)
    early = signal.apply(cfg.desired_size + step, "backlog right after creation")
    assert (early.before, early.after, early.changed) == (cfg.desired_size, cfg.desired_size, False)
    assert "cooldown" in early.detail, early.detail
    time.sleep(3)  # a taken signal resizes 1-6 s later: give it time to show if it was taken
    assert heat_size(api, path) == cfg.desired_size
    assert cooldown_end(api, path)[0] == end_at_create  # an ignored signal starts no cooldown

    # After the cooldown: one signal adds scaleUpStep servers; the next is inside the new cooldown.
    wait_cooldown_over(api, path)
    grown = min(cfg.desired_size + step, high)
    assert grown < high, "this check needs a stack whose first step stays below maxSize"
    up = signal.apply(high + 3, "large backlog")
    assert (up.before, up.after) == (cfg.desired_size, grown), up.detail
    assert "2 signal" in up.detail and "cooldown" in up.detail, up.detail
    time.sleep(3)
    assert heat_size(api, path) == grown

    # A desired capacity outside min..max is refused by the template's own parameter range (400,
    # naming the range), and the stack is left as it was: still COMPLETE, still resizable.
    refused = api.patch(path, json={"parameters": {hot.P_DESIRED: high + 1}}, raise_exc=False)
    assert refused.status_code == 400, refused.text
    assert f"max: {high}" in refused.json()["error"]["message"]
    assert wait_stack(api, path)["stack_status"] == "CREATE_COMPLETE"

    # PATCH mode: the desired-capacity parameter, UPDATE_COMPLETE at the requested size.
    patch = actuator(controlplane, monkeypatch, deployed.stack_name, "patch")
    near_max = high - 1
    assert low <= near_max <= high and near_max != grown
    patched = patch.apply(near_max, "backlog")
    assert (patched.before, patched.after) == (grown, near_max), patched.detail
    assert "UPDATE_COMPLETE" in patched.detail
    stack = wait_stack(api, path)
    assert stack["stack_status"] == "UPDATE_COMPLETE"
    assert int(stack["parameters"][hot.P_DESIRED]) == near_max
    assert heat_size(api, path) == near_max

    # Signals never take the group past maxSize (an update's end starts the cooldown too: wait it out).
    wait_cooldown_over(api, path)
    top = signal.apply(high + 3, "spike")
    assert (top.before, top.after) == (near_max, high), top.detail
    assert f"max_size {high}" in top.detail, top.detail
    time.sleep(3)
    assert heat_size(api, path) == high == signal.observe().current


def test_patch_mode_scales_the_rendered_group_down_to_min_size(
    controlplane, monkeypatch, orchestration, deployed
):
    api, path, low = orchestration, deployed.path, deployed.cfg.min_size
    patch = actuator(controlplane, monkeypatch, deployed.stack_name, "patch")
    before = patch.observe().current
    assert before > low, "the previous test should have left the group above minSize"
    if low == 0:
        # Heat 27 reads a PATCHed desired_capacity of 0 as "not given" (autoscaling_group.py
        # handle_update: `desired_capacity or capacity`): UPDATE_COMPLETE, size unchanged. The
        # actuator PATCHes to 1 and lets the scale-down policy take the last server, which Heat
        # honours once the update's cooldown is over; the monitor's next look asks again.
        first = patch.apply(0, "queue drained")
        assert (first.before, first.after) in ((before, 1), (before, 0)), first.detail
        assert "PATCH" in first.detail and "by signal" in first.detail, first.detail
        assert wait_stack(api, path)["stack_status"] == "UPDATE_COMPLETE"
        if first.after == 1:
            wait_cooldown_over(api, path)
            second = patch.apply(0, "queue still drained")
            assert (second.before, second.after) == (1, 0), second.detail
        time.sleep(3)
        assert heat_size(api, path) == 0 == patch.observe().current
        return
    # A PATCH is no signal: the cooldown the previous signals started does not hold it back.
    floor = patch.apply(low, "queue drained")
    assert "UPDATE_COMPLETE" in floor.detail, floor.detail
    stack = wait_stack(api, path)
    assert stack["stack_status"] == "UPDATE_COMPLETE"
    assert int(stack["parameters"][hot.P_DESIRED]) == low
    assert (floor.before, floor.after) == (before, low), floor.detail
    assert heat_size(api, path) == low == patch.observe().current


def test_deleting_the_rendered_stack_leaves_nothing(orchestration, identity, demo_session, deployed):
    api, path = orchestration, deployed.path
    resources = api.get(f"{path}/resources", params={"nested_depth": 2}).json()["resources"]
    kinds = {r["resource_name"]: r["resource_type"] for r in resources if r.get("parent_resource") is None}
    assert kinds == {
        hot.GROUP: "OS::Heat::AutoScalingGroup",
        hot.SERVER_GROUP: "OS::Nova::ServerGroup",
        hot.SCALE_UP: "OS::Heat::ScalingPolicy",
        hot.SCALE_DOWN: "OS::Heat::ScalingPolicy",
    }
    nested_id = next(r["physical_resource_id"] for r in resources if r["resource_name"] == hot.GROUP)
    # What Heat made in Keystone for this stack: a project in its stack-user domain holding one
    # user per scaling policy, and a trust from the stack's owner.
    project = identity.get(f"/projects/{deployed.user_project_id}", raise_exc=False)
    assert project.status_code == 200, project.text
    # Heat names it "<owner's project id>-<stack id>", cut at Keystone's 64 characters.
    assert project.json()["project"]["name"] == f"{demo_session.get_project_id()}-{deployed.stack_id}"[:64]
    users = policy_users(identity, deployed.user_project_id)
    assert [u for u in users if f"-{hot.SCALE_UP}-" in u] and [
        u for u in users if f"-{hot.SCALE_DOWN}-" in u
    ], users
    trustor = demo_session.get_user_id()
    stack_trusts = trusts(identity, trustor) - deployed.trusts_before
    assert stack_trusts

    api.delete(path)
    assert wait_stack(api, path)["stack_status"] == "DELETE_COMPLETE"
    # Listed as DELETE_COMPLETE for a moment while the engine finishes, then not at all.
    deadline = time.monotonic() + 30
    while True:
        listed = {s["id"] for s in api.get("/stacks", params={"show_nested": True}).json()["stacks"]}
        if not {deployed.stack_id, nested_id} & listed:
            break
        assert time.monotonic() < deadline, "the deleted stack or its group is still listed"
        time.sleep(0.5)
    assert api.get(f"/stacks/{deployed.stack_name}", raise_exc=False).status_code == 404
    assert api.get(f"{path}/resources").json()["resources"] == []
    nested = api.get(f"/stacks/{nested_id}", params={"resolve_outputs": False}, raise_exc=False)
    assert nested.status_code == 404 or nested.json()["stack"]["stack_status"] == "DELETE_COMPLETE"
    assert identity.get(f"/projects/{deployed.user_project_id}", raise_exc=False).status_code == 404
    assert policy_users(identity, deployed.user_project_id) == []
    assert not stack_trusts & trusts(identity, trustor)

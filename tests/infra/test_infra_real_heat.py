"""The stack's own HOT template in a real Heat, and its access rules in a real Keystone.

A real Keystone 30 + Heat 27 on loopback (devenv.controlplane; no Nova, no Glance): the servers and
the server group are mapped to ``OS::Heat::None`` in the stack's environment, and the image
parameter's ``glance.image`` constraint is dropped (there is no Glance to ask). Everything else is
the template ``pulumi up`` sends: the group reaches its desired size, the size output and the
policies' signal URLs work, a scale-up signal adds ``scaleUpStep`` servers, and deleting the
one stack leaves nothing. Keystone accepts both credentials' access rules as the program writes them,
and with Heat's keystonemiddleware told its service type (``service_type = orchestration``, which
a cloud that supports access rules sets, and devenv.heat writes), a credential with the monitor's
rules may find, read, signal and PATCH its own stack and nothing else.

The control plane is the session's ``controlplane`` (tests/conftest.py), shared with other tests:
the stacks here have unique names and only they are checked.
"""

from __future__ import annotations

import time
import uuid

import pytest

from devenv.heat import NO_NOVA_ENVIRONMENT, wait_stack, without_glance
from infra import access_rules, hot
from infra.render import render

pytestmark = pytest.mark.controlplane

CONFIG = {
    "cloud": "local",
    "region": "RegionOne",
    "flavor": "m1.small",
    "network": "private",
    "identityEndpoint": "http://127.0.0.1:5000/v3",
    "minSize": 1,
    "desiredSize": 2,
    "maxSize": 6,
    "scaleUpStep": 2,
    "scaleUpCooldown": 0,
    "scaleDownCooldown": 0,
    "queueName": "jobs",
}


@pytest.fixture(scope="module")
def heat(heat_session):
    """The orchestration API as the demo user (the owner of the stacks)."""
    from keystoneauth1 import adapter

    return adapter.Adapter(heat_session, service_type="orchestration", interface="public")


def _output(heat, path, key):
    return heat.get(f"{path}/outputs/{key}").json()["output"]["output_value"]


def _wait_size(heat, path, want, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        size = _output(heat, path, hot.OUT_CURRENT_SIZE)
        if size == want:
            return size
        assert time.monotonic() < deadline, f"group size {size}, expected {want}"
        time.sleep(1)


@pytest.fixture(scope="module")
def own_stack(heat):
    """The stack `pulumi up` would create (servers mapped to OS::Heat::None); deleted at the end."""
    template = without_glance(render("iad", cfg_override=CONFIG).template)
    name = f"queue-workers-test-{uuid.uuid4().hex[:8]}"
    resp = heat.post(
        "/stacks",
        json={
            "stack_name": name,
            "template": template,
            "environment": NO_NOVA_ENVIRONMENT,
            "timeout_mins": 5,
            "parameters": {
                hot.P_IMAGE: "consumer-template",
                hot.P_SECURITY_GROUP: "sg",
                hot.P_CREDENTIALS_ENV: "T1NfQVVUSF9UWVBFPW5vbmUK",
                hot.P_TEMPLATE_PROPERTIES: {"qw_template_name": "queue-workers-consumer"},
                hot.P_TEMPLATE_LABEL: "queue-workers-consumer-v1 abababababab",
            },
        },
    )
    path = f"/stacks/{name}/{resp.json()['stack']['id']}"
    try:
        stack = wait_stack(heat, path)
        assert stack["stack_status"] == "CREATE_COMPLETE", stack.get("stack_status_reason")
        yield path
    finally:
        heat.delete(path, raise_exc=False)
    # deleting the one stack removes the group, its servers and the policies
    assert wait_stack(heat, path)["stack_status"] == "DELETE_COMPLETE"


@pytest.fixture(scope="module")
def other_stack(heat):
    """Another stack of the same project, which the monitor's credential must not touch."""
    name = f"someone-else-{uuid.uuid4().hex[:6]}"
    resp = heat.post(
        "/stacks",
        json={
            "stack_name": name,
            "timeout_mins": 5,
            "template": {
                "heat_template_version": hot.HOT_VERSION,
                "resources": {"nothing": {"type": "OS::Heat::None"}},
            },
        },
    )
    path = f"/stacks/{name}/{resp.json()['stack']['id']}"
    try:
        assert wait_stack(heat, path)["stack_status"] == "CREATE_COMPLETE"
        yield path
    finally:
        heat.delete(path, raise_exc=False)
    # wait for it: a delete still running when the next stack is made has made Heat's trust fail
    assert wait_stack(heat, path)["stack_status"] == "DELETE_COMPLETE"


def test_the_stack_template_runs_in_real_heat(heat, own_stack):
    path = own_stack
    name, stack_id = path.split("/")[2:4]
    assert _output(heat, path, hot.OUT_CURRENT_SIZE) == 2  # desiredSize
    up = _output(heat, path, hot.OUT_SCALE_UP_URL)
    assert up.endswith(f"/stacks/{name}/{stack_id}/resources/{hot.SCALE_UP}/signal")
    # POST the signal URL with a token: Heat adds scaleUpStep servers
    r = heat.session.post(up, authenticated=True, raise_exc=False)
    assert r.status_code == 200, r.text
    _wait_size(heat, path, 4)
    down = _output(heat, path, hot.OUT_SCALE_DOWN_URL)
    assert heat.session.post(down, authenticated=True, raise_exc=False).status_code == 200
    _wait_size(heat, path, 3)


def test_keystone_accepts_both_credentials_access_rules(controlplane):
    from keystoneauth1 import adapter

    session = controlplane.session("local")
    ks = adapter.Adapter(session, service_type="identity", interface="public")
    user = session.get_user_id()
    rules = {
        "consumer": access_rules.consumer_rules("jobs", "jobs-dlq"),
        "monitor": access_rules.monitor_rules("jobs", "jobs-dlq", "queue-workers-iad"),
    }
    for role, wanted in rules.items():
        body = {
            "application_credential": {
                "name": f"qw-test-{role}-{uuid.uuid4().hex[:6]}",
                "access_rules": wanted,
                "roles": [{"name": "member"}],
            }
        }
        r = ks.post(f"/users/{user}/application_credentials", json=body, raise_exc=False)
        if r.status_code != 201:
            tok = ks.get("/auth/tokens", headers={"X-Subject-Token": session.get_token()}).json()["token"]
            print(
                "token of the refused request:",
                user,
                [x["name"] for x in tok.get("roles", [])],
                tok.get("project"),
                tok.get("methods"),
            )
        assert r.status_code == 201, r.text
        cred = r.json()["application_credential"]
        try:
            got = {(a["service"], a["method"], a["path"]) for a in cred["access_rules"]}
            assert got == {(a["service"], a["method"], a["path"]) for a in wanted}
            assert not cred["unrestricted"]  # Keystone answers null or false
        finally:
            ks.delete(f"/users/{user}/application_credentials/{cred['id']}", raise_exc=False)


def _app_credential_token(controlplane, rules: list) -> str:
    from keystoneauth1 import adapter

    session = controlplane.session("local")
    ks = adapter.Adapter(session, service_type="identity", interface="public")
    r = ks.post(
        f"/users/{session.get_user_id()}/application_credentials",
        json={"application_credential": {"name": f"qw-test-{uuid.uuid4().hex[:8]}", "access_rules": rules}},
        raise_exc=False,
    )
    assert r.status_code == 201, r.text
    cred = r.json()["application_credential"]
    r = ks.post(
        "/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {"id": cred["id"], "secret": cred["secret"]},
                }
            }
        },
        raise_exc=False,
    )
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


def test_monitor_credential_may_only_signal_read_and_update_its_own_stack(
    controlplane, heat, own_stack, other_stack
):
    import requests

    own_name = own_stack.split("/")[2]
    token = _app_credential_token(controlplane, access_rules.monitor_rules("jobs", "jobs-dlq", own_name))
    s = requests.Session()
    s.headers["X-Auth-Token"] = token
    base = heat.get_endpoint()

    def call(method, path, **kw):
        return s.request(method, base + path, timeout=60, allow_redirects=False, **kw)

    # its job: find and read its stack, signal its policies, set its desired capacity
    assert call("GET", f"/stacks/{own_name}").status_code == 302  # lookup by name
    assert call("GET", own_stack, params={"resolve_outputs": False}).status_code == 200
    before = call("GET", f"{own_stack}/outputs/{hot.OUT_CURRENT_SIZE}").json()["output"]["output_value"]
    assert call("POST", f"{own_stack}/resources/{hot.SCALE_UP}/signal").status_code == 200
    _wait_size(heat, own_stack, min(before + CONFIG["scaleUpStep"], CONFIG["maxSize"]))
    r = call("PATCH", own_stack, json={"parameters": {hot.P_DESIRED: 2}})
    assert r.status_code == 202, r.text
    assert wait_stack(heat, own_stack)["stack_status"] == "UPDATE_COMPLETE"
    _wait_size(heat, own_stack, 2)
    # nothing else: Keystone refuses with 401
    refused = [
        call("DELETE", own_stack),
        call("GET", other_stack),
        call("POST", f"{other_stack}/resources/{hot.SCALE_UP}/signal"),
        call("PATCH", other_stack, json={"parameters": {}}),
        call("GET", "/stacks"),
        call(
            "POST",
            "/stacks",
            json={"stack_name": "x", "template": {"heat_template_version": hot.HOT_VERSION}},
        ),
    ]
    assert [r.status_code for r in refused] == [401] * len(refused)

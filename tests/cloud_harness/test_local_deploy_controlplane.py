"""The local stack deployed by the harness (devenv.pulumi_local) on the control plane: real
Keystone, Heat and Zaqar behind Keystone (fixture ``controlplane``), no Nova, Neutron or Glance yet.

The program runs as `pulumi up` would run it; each resource is made for real except those whose
service is missing (``stand_ins=True``: the security group, its rules and the monitor server are
recorded, not made; the Heat stack's servers are ``OS::Heat::None``). What a user would see is
checked in the services themselves: the credentials' access rules in Keystone (and that the
consumer's credential may claim but not delete the queue), the stack's template and parameters in
Heat, the queues' policy in Zaqar; the real ids flowed back into the program (the monitor's user
data names the real stack and signal URL); and after destroy the project holds what it held before.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from harness_testlib import project_resources
from keystoneauth1 import adapter
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from devenv.heat import without_glance
from devenv.pulumi_local import LocalDeployment
from infra import hot
from infra.access_rules import consumer_rules, monitor_rules
from infra.render import render

# Stand-ins apply only where a service is missing: in a session that runs the cloud these tests
# are deselected (tests/conftest.py) and `make test` runs them in a session of their own.
pytestmark = [pytest.mark.controlplane, pytest.mark.controlplane_only]

CRED = "openstack:identity/applicationCredential:ApplicationCredential"
STACK = "openstack:orchestration/stackV1:StackV1"
SERVER = "openstack:compute/instance:Instance"
SECGROUP = "openstack:networking/secGroup:SecGroup"


@pytest.fixture(scope="module")
def deployment(controlplane, project):
    """The local stack, up once for this module (a unique queue name: Zaqar keeps old claims)."""
    before = project_resources(project)
    lines: list[str] = []
    d = LocalDeployment(
        "local",
        controlplane,
        stand_ins=True,
        progress=lines.append,
        config={"queueName": f"local-{uuid.uuid4().hex[:8]}"},
    )
    d.up()
    d.before, d.lines = before, lines
    yield d
    d.destroy()  # idempotent: the last test destroys it itself


def test_credentials_in_keystone_carry_the_programs_access_rules(deployment, project):
    queue, dlq = deployment.outputs["queue"], deployment.outputs["dead_letter_queue"]
    expected = {
        "consumer": consumer_rules(queue, dlq),
        "monitor": monitor_rules(queue, dlq, "queue-workers-local"),
    }
    held = project.credentials()
    for rec in deployment.find(CRED):
        cred = held[rec.id]
        role = rec.name.rsplit("-", 1)[1]
        assert cred["name"] == f"queue-workers-local-{role}"
        assert [{k: r[k] for k in ("service", "method", "path")} for r in cred["access_rules"]] == expected[
            role
        ]
        # member, and what Keystone says it implies (reader)
        assert "member" in [r["name"] for r in cred["roles"]] and cred["unrestricted"] is False
    assert deployment.outputs["consumer_credential_id"] == deployment.one(CRED, "credentials-consumer").id


def test_the_consumer_credential_may_claim_its_queue_and_nothing_more(controlplane, deployment):
    auth = v3.ApplicationCredential(
        auth_url=controlplane.url,
        application_credential_id=deployment.outputs["consumer_credential_id"],
        application_credential_secret=deployment.outputs["consumer_credential_secret"],
    )
    zaqar = adapter.Adapter(ks_session.Session(auth=auth), service_type="messaging", interface="public")
    headers, queue = {"Client-ID": str(uuid.uuid4())}, deployment.outputs["queue"]
    claim = zaqar.post(
        f"/v2/queues/{queue}/claims",
        json={"ttl": 60, "grace": 60},
        headers=headers,
        raise_exc=False,
        allow_reauth=False,
    )
    assert claim.status_code in (201, 204), claim.text  # empty queue: 204, nothing claimed
    delete = zaqar.delete(f"/v2/queues/{queue}", headers=headers, raise_exc=False, allow_reauth=False)
    assert delete.status_code == 401, delete.text
    assert "consumer_credential_secret" in deployment.secret_outputs


def test_the_heat_stack_holds_the_programs_template_and_parameters(deployment, project):
    rec = deployment.one(STACK)
    path = f"/stacks/queue-workers-local/{rec.id}"
    stack = project.orchestration.get(path).json()["stack"]
    assert stack["stack_status"] == "CREATE_COMPLETE" and stack["id"] == deployment.outputs["heat_stack"]
    sent = yaml.safe_load(rec.inputs["templateOpts"]["Bin"])
    # what `python -m infra render` prints for the same settings is what Heat holds (no Glance here:
    # the image parameter's glance.image constraint is the only difference)
    config, _ = deployment.config()
    offline = render("local", cfg_override={k.split(":", 1)[1]: v for k, v in config.items()}).template
    assert sent == offline
    assert project.orchestration.get(f"{path}/template").json() == without_glance(sent)
    params = stack["parameters"]
    assert params[hot.P_IMAGE] == deployment.outputs["template_image_id"]
    assert params[hot.P_SECURITY_GROUP] == deployment.one(SECGROUP).id
    assert params[hot.P_DESIRED] == "0" == deployment.outputs["current_size"]
    assert params[hot.P_CREDENTIALS_ENV] == "******"  # hidden: Heat never shows the credential
    outputs = {o["output_key"]: o["output_value"] for o in stack["outputs"]}
    assert deployment.outputs["scale_up_url"] == outputs[hot.OUT_SCALE_UP_URL]
    assert deployment.outputs["scale_down_url"] == outputs[hot.OUT_SCALE_DOWN_URL]
    # the consumers' credential file is the real one: the consumer credential's id and secret
    env = base64.b64decode(rec.inputs["parameters"][hot.P_CREDENTIALS_ENV]).decode()
    assert f"OS_APPLICATION_CREDENTIAL_ID={deployment.outputs['consumer_credential_id']}" in env
    assert deployment.outputs["consumer_credential_secret"] in env


def test_the_queues_carry_the_stack_policy(deployment, project):
    queue, dlq = deployment.outputs["queue"], deployment.outputs["dead_letter_queue"]
    meta = project.queue(queue)
    assert meta["_max_claim_count"] == 5 and meta["_dead_letter_queue"] == dlq
    assert meta["_default_message_ttl"] == 3600 and meta["_dead_letter_queue_messages_ttl"] == 1209600
    assert project.queue(dlq)["_default_message_ttl"] == 1209600


def test_real_ids_reach_the_program_in_dependency_order(deployment):
    order = {r.urn: i for i, r in enumerate(deployment.resources)}
    for i, rec in enumerate(deployment.resources):
        assert all(order[dep] < i for dep in rec.dependencies if dep in order), rec.name
    server = deployment.one(SERVER)
    assert server.stand_in  # no Nova in the control plane: recorded, not made
    stack = deployment.one(STACK)
    assert order[stack.urn] < order[server.urn]
    user_data = server.inputs["userData"]
    assert f"heat stack queue-workers-local/{stack.id}" in user_data
    assert deployment.outputs["scale_up_url"] in user_data
    files = yaml.safe_load(user_data)["write_files"]
    written = "".join(
        base64.b64decode(f["content"]).decode() if f.get("encoding") in ("b64", "base64") else f["content"]
        for f in files
    )
    assert f"OS_APPLICATION_CREDENTIAL_ID={deployment.one(CRED, 'credentials-monitor').id}" in written
    assert deployment.one(CRED, "credentials-monitor").outputs["secret"] in written
    assert any(line.startswith("  + " + STACK) and stack.id in line for line in deployment.lines)
    assert any(line.startswith("  ~ " + SERVER) and "NOT MADE" in line for line in deployment.lines)


def test_destroy_leaves_the_project_as_it_was(deployment, project):
    made = {r.id for r in deployment.resources if r.made}
    during = project_resources(project)
    assert made & during["application credentials"] and made & during["heat stacks"]
    assert deployment.outputs["queue"] in during["zaqar queues"]
    deployment.lines.clear()
    deployment.destroy()
    assert project_resources(project) == deployment.before
    deleted = [line.split()[1] for line in deployment.lines if line.startswith("  - ")]
    assert deleted[0] == STACK and deleted.count(CRED) == 2  # newest first: the stack before its credentials


def test_without_stand_ins_a_missing_service_fails_by_name_and_nothing_is_left(controlplane, project):
    before = project_resources(project)
    d = LocalDeployment(
        "local",
        controlplane,
        progress=lambda _line: None,
        config={"queueName": f"local-{uuid.uuid4().hex[:8]}"},
    )
    # the template image lookup comes first: the program reports it as a missing template image
    with pytest.raises(Exception, match=r"getImage needs the 'image' service, which this cloud's catalog"):
        d.up()
    assert project_resources(project) == before


def test_an_unknown_resource_type_fails_by_name_and_what_was_made_is_deleted(controlplane, project):
    import pulumi
    import pulumi_openstack as openstack

    before = project_resources(project)

    def program():
        provider = openstack.Provider("openstack", cloud="local", region="RegionOne")
        cred = openstack.identity.ApplicationCredential(
            "cred",
            name=f"qw-harness-{uuid.uuid4().hex[:6]}",
            roles=["member"],
            opts=pulumi.ResourceOptions(provider=provider),
        )
        openstack.dns.Zone(  # a kind the harness has no resource for (Designate)
            "zone", name="example.org.", description=cred.id, opts=pulumi.ResourceOptions(provider=provider)
        )

    d = LocalDeployment("local", controlplane, progress=lambda _line: None, program=program)
    with pytest.raises(Exception) as err:
        d.up()
    assert "does not know resource type 'openstack:dns/zone:Zone'" in str(err.value)
    assert [r.name for r in d.resources if r.made] == ["cred"] and all(
        r.deleted for r in d.resources if r.made
    )
    assert project_resources(project) == before


def test_the_command_line_ups_and_destroys_for_a_person(controlplane, project):
    before = project_resources(project)
    env = {**os.environ, **controlplane.env()}
    repo = Path(__file__).resolve().parents[2]

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "devenv.pulumi_local", *args, "--stack", "local"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    queue = f"local-{uuid.uuid4().hex[:8]}"
    up = run("up", "--stand-ins", "--set", f"queueName={queue}")
    assert up.returncode == 0, up.stdout + up.stderr
    made = [line.split() for line in up.stdout.splitlines() if line.startswith("  + ")]
    assert [m[1] for m in made].count("openstack:identity/applicationCredential:ApplicationCredential") == 2
    assert f"queue: {queue}" in up.stdout and "consumer_credential_secret: <secret>" in up.stdout
    assert queue in project.queues()
    down = run("destroy")
    assert down.returncode == 0, down.stdout + down.stderr
    deleted = [line.split()[2] for line in down.stdout.splitlines() if line.startswith("  - ")]
    assert sorted(deleted) == sorted(m[2] for m in made if m[1] != "pulumi:providers:openstack")
    assert project_resources(project) == before
    again = run("destroy")  # nothing left to destroy: said so, not a traceback
    assert again.returncode == 1 and "no local deployment of stack 'local'" in again.stderr

"""The local stack deployed by the harness on the local cloud (fixture ``cloud``: Keystone, Heat,
Zaqar, Nova, Neutron, Glance), nothing stood in: the security group and its rules in Neutron, the
monitor server in Nova (ACTIVE, with the program's user data, flavor, network, security group and
metadata), the Heat stack with real ``OS::Nova::Server`` members, and after destroy the project's
servers, security groups, ports and images (but the template) as they were before.

The template image is the base image ``debian-12`` uploaded again under a baked template's name and
properties (what `fab bake-template` records); the whole-loop test bakes a real one.
"""

from __future__ import annotations

import base64
import uuid

import pytest
from harness_testlib import Project, project_resources

from devenv.pulumi_local import LocalDeployment
from images.bake import P_NAME, P_STATE, P_VERSION

pytestmark = pytest.mark.cloud

SERVER = "openstack:compute/instance:Instance"
SECGROUP = "openstack:networking/secGroup:SecGroup"
RULE = "openstack:networking/secGroupRule:SecGroupRule"
STACK = "openstack:orchestration/stackV1:StackV1"


@pytest.fixture(scope="module")
def local_cloud(cloud):
    """The session's local cloud (the root conftest's ``cloud``)."""
    return cloud


@pytest.fixture(scope="module")
def conn(local_cloud):
    return local_cloud.connection("local")


@pytest.fixture(scope="module")
def template_image(conn, tmp_path_factory):
    """A template image as the bake leaves it (name and qw_* properties), with debian-12's data
    (downloaded to a file first: a streamed download piped into the upload hung Glance's PUT)."""
    base = conn.image.find_image("debian-12", ignore_missing=False)
    path = tmp_path_factory.mktemp("template") / "rootfs"
    conn.image.download_image(base, output=str(path))
    image = conn.image.create_image(
        name="queue-workers-consumer-v1-20261201-000000",
        filename=str(path),
        disk_format=base.disk_format or "raw",
        container_format=base.container_format or "bare",
        allow_duplicates=True,
        wait=True,
        **{P_NAME: "queue-workers-consumer", P_VERSION: "1", P_STATE: "complete"},
    )
    path.unlink()
    yield image
    conn.image.delete_image(image, ignore_missing=True)


@pytest.fixture(scope="module")
def deployment(local_cloud, template_image):
    project = Project(local_cloud.session("local"))
    before = project_resources(project)
    d = LocalDeployment("local", local_cloud, config={"queueName": f"local-{uuid.uuid4().hex[:8]}"})
    d.up()
    d.before, d.project = before, project
    yield d
    d.destroy()


def test_the_security_group_holds_exactly_the_programs_rules(deployment, conn):
    group = conn.network.get_security_group(deployment.one(SECGROUP).id)
    assert group.name == "qw-local-local"
    rules = {
        (r.direction, r.ether_type, r.protocol, r.port_range_min, r.remote_ip_prefix)
        for r in conn.network.security_group_rules(security_group_id=group.id)
    }
    # egress only (Neutron's default rules removed, the program's two made); no ingress: no sshCidrs
    assert rules == {("egress", "IPv4", None, None, None), ("egress", "IPv6", None, None, None)}
    assert {r.id for r in conn.network.security_group_rules(security_group_id=group.id)} == {
        r.id for r in deployment.find(RULE)
    }


def test_the_monitor_server_runs_with_the_programs_user_data(deployment, conn, local_cloud, template_image):
    rec = deployment.one(SERVER)
    server = conn.compute.get_server(rec.id)
    assert server.status == "ACTIVE" and server.id == deployment.outputs["monitor_server"]
    assert server.image["id"] == template_image.id == deployment.outputs["template_image_id"]
    assert server.flavor["original_name"] == "m1.tiny"
    assert server.metadata["qw_role"] == "monitor" and server.metadata["qw_stack"] == "queue-workers-local"
    assert {g["name"] for g in server.security_groups} == {"qw-local-local"}
    ports = list(conn.network.ports(device_id=server.id))
    assert [p.network_id for p in ports] == [conn.network.find_network("public").id]
    assert ports[0].security_group_ids == [deployment.one(SECGROUP).id]
    # user data is visible to admins (microversion 2.3): exactly what the program rendered
    admin = local_cloud.connection("local-admin")
    shown = admin.compute.get(f"/servers/{server.id}", microversion="2.3").json()["server"]
    assert base64.b64decode(shown["OS-EXT-SRV-ATTR:user_data"]).decode() == rec.inputs["userData"]


def test_the_heat_stack_has_real_server_members(deployment, conn):
    rec = deployment.one(STACK)
    project: Project = deployment.project
    resources = project.orchestration.get(f"/stacks/queue-workers-local/{rec.id}/resources").json()[
        "resources"
    ]
    kinds = {r["resource_name"]: r["resource_type"] for r in resources}
    assert kinds["server_group"] == "OS::Nova::ServerGroup"
    group_id = next(r["physical_resource_id"] for r in resources if r["resource_name"] == "server_group")
    group = conn.compute.get_server_group(group_id)
    assert (group.policy or (group.policies or [None])[0]) == "soft-anti-affinity"


def test_destroy_leaves_the_project_as_it_was(deployment):
    deployment.destroy()
    assert project_resources(deployment.project) == deployment.before

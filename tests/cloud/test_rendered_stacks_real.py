"""Each example stack's rendered HOT template created in Heat with real OS::Nova::Server members.

For every stack ``python -m infra render`` knows, the template the Pulumi program declares goes to
the session's real Heat as it is (no ``resource_registry`` mapping, no constraint removed: Heat asks
Glance about the image): the server group with soft anti-affinity, the members on the network the
stack file names, with its security group, its metadata and its user data. The members are real
servers (booted as machines); a scale-down signal removes ``scaleDownStep`` of them, deleted in
Nova; deleting the stack leaves nothing in Nova or Neutron.

One change a user would make with ``pulumi config set`` is made: both cooldowns are 0 (the
example values, 120-600 s, would make this file take many minutes). The parameters the program
fills at deploy time get this cloud's values: ``debian-12`` as the template image, a security
group made here, an env file of dummy settings.
"""

from __future__ import annotations

import base64
import uuid

import pytest
from keystoneauth1 import adapter

from devenv import cloud as local_cloud
from devenv.heat import wait_no_deletions, wait_stack
from devenv.procs import wait_until
from images.prune import images_in_use, stack_strings, stacks
from infra import hot
from infra.config import load
from infra.render import render, stack_names, stack_settings

pytestmark = pytest.mark.cloud


@pytest.mark.parametrize("name", stack_names())
def test_rendered_stack_with_real_servers(cloud, member, admin, make_keypair, name):
    overrides, secret_keys = stack_settings(name, scaleUpCooldown=0, scaleDownCooldown=0)
    cfg = load(overrides, secret_keys)
    template = render(name, cfg_override=overrides, secret_keys=secret_keys).template
    assert template["resources"][hot.GROUP]["properties"]["resource"]["type"] == "OS::Nova::Server"

    session = cloud.session("local")
    heat = adapter.Adapter(session, service_type="orchestration", interface="public")
    image = member.image.find_image(local_cloud.BASE_IMAGE)
    group = member.network.create_security_group(name=f"queue-workers-sg-{uuid.uuid4().hex[:6]}")
    if cfg.key_pair:  # the stack file names an existing key pair of the user's
        make_keypair(cfg.key_pair)
    stack_name = f"queue-workers-{name}-{uuid.uuid4().hex[:8]}"
    env_file = b"QW_QUEUE=jobs\n"
    wait_no_deletions(heat)
    resp = heat.post(
        "/stacks",
        json={
            "stack_name": stack_name,
            "template": template,
            "timeout_mins": 15,
            "parameters": {
                hot.P_IMAGE: image.id,
                hot.P_SECURITY_GROUP: group.id,
                hot.P_CREDENTIALS_ENV: base64.b64encode(env_file).decode(),
                hot.P_TEMPLATE_LABEL: f"{local_cloud.BASE_IMAGE} test",
            },
        },
    )
    assert resp.status_code == 201, resp.text
    path = f"/stacks/{stack_name}/{resp.json()['stack']['id']}"

    def output(key):
        return heat.get(f"{path}/outputs/{key}").json()["output"]["output_value"]

    def members():
        """The group's servers as Nova shows them (ids from the stack's server_ids output)."""
        return [member.compute.get_server(i) for i in (output(hot.OUT_SERVER_IDS) or [])]

    seen: set = set()
    group_id = None
    try:
        stack = wait_stack(heat, path, 900)
        assert stack["stack_status"] == "CREATE_COMPLETE", stack.get("stack_status_reason")
        servers = wait_until(
            lambda: (
                (found := members()) is not None
                and len(found) == cfg.desired_size
                and all(s.status == "ACTIVE" for s in found)
                and (found or [None])
            ),
            300,
            f"{cfg.desired_size} ACTIVE servers",
        )
        servers = [s for s in servers if s is not None]
        seen.update(s.id for s in servers)
        group_id = heat.get(f"{path}/resources/{hot.SERVER_GROUP}").json()["resource"]["physical_resource_id"]
        server_group = member.compute.get_server_group(group_id)
        assert server_group.policy == "soft-anti-affinity"
        assert sorted(server_group.member_ids) == sorted(seen)
        for server in servers:
            assert server.flavor["original_name"] == cfg.flavor
            assert set(server.addresses) == {cfg.network}
            assert server.metadata["qw_role"] == "consumer" and server.metadata["qw_queue"] == cfg.queue_name
            port = next(member.network.ports(device_id=server.id))
            assert port.security_group_ids == [group.id]
            if cfg.key_pair:
                assert server.key_name == cfg.key_pair
            # The user data Nova hands the server: the rendered cloud-config with the env filled in.
            data = base64.b64decode(admin.compute.get_server(server.id).user_data or "").decode()
            assert data.startswith("#cloud-config") and hot.CONSUMER_ENV_FILE in data

        # prune-templates reads every stack, nested ones too: the group's nested stack (its
        # member definitions) has the image id written out, and the real Heat lists and shows it.
        used, notes = images_in_use(member)
        assert image.id in used and notes == ["servers checked", "stacks checked"]
        nested = [(i, n) for i, n in stacks(member) if n.startswith(f"{stack_name}-{hot.GROUP}-")]
        assert len(nested) == 1, stacks(member)
        if servers:
            assert image.id in stack_strings(member, nested[0][0])

            # Scale-in by the template's own policy: the members it removes are deleted in Nova.
            down = session.post(output(hot.OUT_SCALE_DOWN_URL), raise_exc=False)
            assert down.status_code == 200, down.text
            expected = max(cfg.desired_size - cfg.scale_down_step, cfg.min_size)
            wait_until(
                lambda: len(output(hot.OUT_SERVER_IDS) or []) == expected or None, 300, f"group of {expected}"
            )
            gone = seen - set(output(hot.OUT_SERVER_IDS) or [])
            assert len(gone) == len(seen) - expected
            for server_id in gone:
                wait_until(
                    lambda: (
                        admin.compute.find_server(server_id, ignore_missing=True, all_projects=True) is None
                    ),
                    120,
                    f"server {server_id} deleted in Nova",
                )
    finally:
        heat.delete(path, raise_exc=False)
        deleted = wait_stack(heat, path, 900)
        member.network.delete_security_group(group, ignore_missing=True)
    assert deleted["stack_status"] == "DELETE_COMPLETE", deleted.get("stack_status_reason")
    for server_id in seen:
        assert admin.compute.find_server(server_id, ignore_missing=True, all_projects=True) is None
    assert group_id not in {g.id for g in admin.compute.server_groups(all_projects=True)}
    assert [p for p in admin.network.ports() if p.device_id in seen] == []

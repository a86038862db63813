"""A Heat AutoScalingGroup of real OS::Nova::Server members on the local cloud.

No resource_registry mapping: the members are Nova servers booted from ``debian-12`` on the
provider network, and Heat's own custom constraints (``nova.flavor``, ``glance.image``,
``neutron.network``) ask the real services. The group is created with one member, a scale-up
signal (the user's token, as the monitor sends it) makes it two, both really ACTIVE in Nova, and
deleting the stack deletes them in Nova.
"""

from __future__ import annotations

import uuid

import pytest
from keystoneauth1 import adapter

from devenv import cloud as local_cloud
from devenv.heat import wait_no_deletions, wait_stack
from devenv.procs import wait_until

pytestmark = pytest.mark.cloud


def group_template() -> dict:
    return {
        "heat_template_version": "2018-08-31",
        "parameters": {
            "image": {"type": "string", "constraints": [{"custom_constraint": "glance.image"}]},
            "flavor": {"type": "string", "constraints": [{"custom_constraint": "nova.flavor"}]},
            "network": {"type": "string", "constraints": [{"custom_constraint": "neutron.network"}]},
        },
        "resources": {
            "workers": {
                "type": "OS::Heat::AutoScalingGroup",
                "properties": {
                    "min_size": 1,
                    "max_size": 3,
                    "desired_capacity": 1,
                    "cooldown": 0,
                    "resource": {
                        "type": "OS::Nova::Server",
                        "properties": {
                            "image": {"get_param": "image"},
                            "flavor": {"get_param": "flavor"},
                            "networks": [{"network": {"get_param": "network"}}],
                            "metadata": {"metering.server_group": {"get_param": "OS::stack_id"}},
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
        },
        "outputs": {
            "current_size": {"value": {"get_attr": ["workers", "current_size"]}},
            "signal_url": {"value": {"get_attr": ["scale_up", "signal_url"]}},
        },
    }


def test_group_of_real_servers_scales_and_goes_with_the_stack(cloud, member):
    session = cloud.session("local")
    heat = adapter.Adapter(session, service_type="orchestration", interface="public")
    wait_no_deletions(heat)
    name = f"qw-cloud-{uuid.uuid4().hex[:8]}"

    # A constraint Heat checks against the real Glance: an unknown image is refused up front.
    bad = heat.post(
        "/stacks",
        json={
            "stack_name": name + "-bad",
            "template": group_template(),
            "parameters": {
                "image": "no-such-image",
                "flavor": "m1.tiny",
                "network": local_cloud.PROVIDER_NETWORK,
            },
        },
        raise_exc=False,
    )
    assert bad.status_code == 400 and "no-such-image" in bad.text, bad.text

    resp = heat.post(
        "/stacks",
        json={
            "stack_name": name,
            "template": group_template(),
            "timeout_mins": 10,
            "parameters": {
                "image": local_cloud.BASE_IMAGE,
                "flavor": "m1.tiny",
                "network": local_cloud.PROVIDER_NETWORK,
            },
        },
    )
    path = f"/stacks/{name}/{resp.json()['stack']['id']}"
    stack_id = resp.json()["stack"]["id"]

    def members():
        return [
            s
            for s in member.compute.servers(details=True)
            if s.metadata.get("metering.server_group") == stack_id
        ]

    try:
        stack = wait_stack(heat, path, 600)
        assert stack["stack_status"] == "CREATE_COMPLETE", stack.get("stack_status_reason")
        assert [s.status for s in members()] == ["ACTIVE"]

        def output(key):
            return heat.get(f"{path}/outputs/{key}").json()["output"]["output_value"]

        signal = session.post(output("signal_url"), raise_exc=False)
        assert signal.status_code == 200, signal.text
        wait_until(lambda: output("current_size") == 2, 600, "group of 2")
        stack = wait_stack(heat, path, 600)
        servers = wait_until(
            lambda: (
                (found := members())
                and len(found) == 2
                and all(s.status == "ACTIVE" for s in found)
                and found
            ),
            300,
            "2 ACTIVE servers",
        )
        assert len({s.id for s in servers}) == 2
    finally:
        heat.delete(path, raise_exc=False)
        deleted = wait_stack(heat, path, 600)
    assert deleted["stack_status"] == "DELETE_COMPLETE", deleted.get("stack_status_reason")
    assert members() == []

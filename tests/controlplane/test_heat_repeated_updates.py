"""Successive desired-capacity updates of the local stack's group through the monitor's Heat
actuator in patch mode, on the real Heat 27 (no Nova): each reaches UPDATE_COMPLETE at the size
asked, and none leaves a resource whose properties Heat can no longer load.

On the local Heat's SQLite database this failed at the second or third update (UPDATE_FAILED:
"resources.group: ResourcePropertiesData with id N not found", then ROLLBACK_FAILED and the next
resize refused) until :func:`devenv.heat.never_reuse_ids`: SQLite handed the id of a deleted
newest row to the next one, and Heat deleted a row by an id it kept after the row was gone
(the docstring there has the Heat source). Measured with triggers on ``resource_properties_data``:
a member's attribute row (id 14) deleted when the member went UPDATE_IN_PROGRESS, id 14 given to
a new member's properties, then deleted again by the first member's second
``clear_stored_attributes``; the next update of the group failed on id 14.

The stack is the one ``python -m infra render --stack local`` prints (the stack the cloud tests
deploy) with its servers replaced, through the stack environment, by a provider template with the
server's properties and attributes: unlike ``OS::Heat::None`` it stores properties and attribute
rows for every member as a server does, which the failure needs. The glance.image constraint is
removed (no Glance here).
"""

from __future__ import annotations

import sqlite3
import uuid

import pytest
import yaml
from heat_testlib import PARAMETERS

from devenv.heat import wait_stack, without_glance
from infra import hot
from infra.render import render
from workload.autoscale.heat import HeatActuator

pytestmark = pytest.mark.controlplane

# OS::Nova::Server's attributes (heat/engine/resources/openstack/nova/server.py): a provider
# template standing in for a built-in type must offer every one (Heat checks the facade).
SERVER_ATTRIBUTES = (
    "accessIPv4",
    "accessIPv6",
    "addresses",
    "console_urls",
    "first_address",
    "instance_name",
    "name",
    "networks",
    "os_collect_config",
    "tags",
)

# The properties the rendered group's server sets, typed as the facade wants them.
SERVER_PARAMETERS = {
    "image": ("string", ""),
    "image_update_policy": ("string", ""),
    "flavor": ("string", ""),
    "networks": ("comma_delimited_list", []),
    "security_groups": ("comma_delimited_list", []),
    "scheduler_hints": ("json", {}),
    "metadata": ("json", {}),
    "user_data_format": ("string", ""),
    "user_data": ("string", ""),
}

SERVER = {
    "heat_template_version": "2021-04-16",
    "parameters": {k: {"type": t, "default": d} for k, (t, d) in SERVER_PARAMETERS.items()},
    "resources": {
        "box": {"type": "OS::Heat::TestResource", "properties": {"value": {"get_param": "flavor"}}}
    },
    "outputs": {a: {"value": {"get_attr": ["box", "output"]}} for a in SERVER_ATTRIBUTES},
}

ENVIRONMENT = {
    "resource_registry": {"OS::Nova::Server": "server.yaml", "OS::Nova::ServerGroup": "OS::Heat::None"}
}


@pytest.fixture
def group_stack(heat_session):
    """The rendered local stack at 1 member; deleted after the test."""
    from keystoneauth1 import adapter

    api = adapter.Adapter(heat_session, service_type="orchestration", interface="public")
    template = render("local").template
    assert template["resources"][hot.GROUP]["properties"]["resource"]["type"] == "OS::Nova::Server"
    name = f"qw-updates-{uuid.uuid4().hex[:8]}"
    resp = api.post(
        "/stacks",
        json={
            "stack_name": name,
            "template": without_glance(template),
            "environment": ENVIRONMENT,
            "files": {"server.yaml": yaml.safe_dump(SERVER)},
            "parameters": {**PARAMETERS, hot.P_DESIRED: 1},
            "timeout_mins": 5,
        },
    )
    path = f"/stacks/{name}/{resp.json()['stack']['id']}"
    try:
        stack = wait_stack(api, path)
        assert stack["stack_status"] == "CREATE_COMPLETE", stack.get("stack_status_reason")
        yield api, name, path
    finally:
        api.delete(path, raise_exc=False)
        wait_stack(api, path)


def missing_properties(controlplane) -> list[tuple]:
    """Resources of the running Heat whose properties or attribute row is gone (what Heat then
    answers "ResourcePropertiesData with id N not found" for)."""
    with sqlite3.connect(controlplane.run_dir / "state" / "heat.sqlite") as db:
        return db.execute(
            "SELECT r.name, r.rsrc_prop_data_id, r.attr_data_id FROM resource r "
            "LEFT JOIN resource_properties_data p ON p.id = r.rsrc_prop_data_id "
            "LEFT JOIN resource_properties_data a ON a.id = r.attr_data_id "
            "WHERE (r.rsrc_prop_data_id IS NOT NULL AND p.id IS NULL) "
            "OR (r.attr_data_id IS NOT NULL AND a.id IS NULL)"
        ).fetchall()


def test_every_desired_capacity_update_completes_at_the_size_asked(controlplane, heat_session, group_stack):
    api, name, path = group_stack
    act = HeatActuator(heat_session, name, mode="patch", settle_timeout=20, update_timeout=120)
    assert act.desired_parameter == hot.P_DESIRED
    for size in (3, 1, 3, 2, 1, 3):
        before = act.observe().current
        result = act.apply(size, "test: one more update")
        assert (result.before, result.after) == (before, size), result
        assert result.detail == f"PATCH {hot.P_DESIRED}={size}: UPDATE_COMPLETE"
        stack = wait_stack(api, path)
        assert stack["stack_status"] == "UPDATE_COMPLETE", stack.get("stack_status_reason")
        assert stack["parameters"][hot.P_DESIRED] == str(size)
        assert missing_properties(controlplane) == []

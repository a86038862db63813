"""The monitor driving a real Heat AutoScalingGroup (local Keystone + Heat) from a real Zaqar
backlog: the decisions PATCH the stack's desired capacity and the size read back follows."""

from __future__ import annotations

import uuid

import pytest

from devenv.heat import NO_NOVA_ENVIRONMENT, wait_stack
from workload.autoscale.heat import HeatActuator
from workload.autoscale.monitor import Monitor
from workload.autoscale.policy import ThresholdConfig, ThresholdPolicy

pytestmark = pytest.mark.controlplane

TEMPLATE = {
    "heat_template_version": "2018-08-31",
    "parameters": {"desired_capacity": {"type": "number", "default": 0}},
    "resources": {
        "workers": {
            "type": "OS::Heat::AutoScalingGroup",
            "properties": {
                "min_size": 0,
                "max_size": 3,
                "cooldown": 0,
                "desired_capacity": {"get_param": "desired_capacity"},
                "resource": {
                    "type": "OS::Nova::Server",
                    "properties": {"image": "consumer-template", "flavor": "m1.small"},
                },
            },
        },
    },
    "outputs": {"current_size": {"value": {"get_attr": ["workers", "current_size"]}}},
}


@pytest.fixture(scope="module")
def heat_group(controlplane):
    """One stack on the session's real Heat with a group of 0..3 members that do nothing (no
    Nova here); deleted at the end."""
    from keystoneauth1 import adapter

    session = controlplane.session("local")
    api = adapter.Adapter(session, service_type="orchestration", interface="public")
    name = f"qw-monitor-{uuid.uuid4().hex[:8]}"
    stack_id = api.post(
        "/stacks",
        json={
            "stack_name": name,
            "template": TEMPLATE,
            "environment": NO_NOVA_ENVIRONMENT,
            "timeout_mins": 5,
        },
    ).json()["stack"]["id"]
    path = f"/stacks/{name}/{stack_id}"
    try:
        stack = wait_stack(api, path)
        assert stack["stack_status"] == "CREATE_COMPLETE", stack.get("stack_status_reason")
        yield session, name
    finally:
        # Wait for the delete: the control plane is shared by the session, and a delete still
        # running while the next test creates a stack has made Heat's trust creation fail.
        api.delete(path, raise_exc=False)
        wait_stack(api, path)


def test_backlog_grows_the_heat_group_and_an_empty_queue_shrinks_it(heat_group, work_queue):
    session, stack = heat_group
    actuator = HeatActuator(session, stack, mode="patch", update_timeout=120)
    policy = ThresholdPolicy(
        ThresholdConfig(
            min_size=0,
            max_size=3,
            scale_up_threshold=10,
            scale_down_threshold=0,
            up_cooldown_s=0,
            down_cooldown_s=0,
        )
    )
    records = []
    monitor = Monitor(work_queue, policy, actuator, interval=0.5, log=records.append)

    work_queue.post([{"seq": i} for i in range(40)])
    sizes = [monitor.step()["group"]["current"] for _ in range(4)]
    assert sizes == [0, 1, 2, 3]  # one step per look, each read back from the stack
    ups = [r for r in records if r["decision"]["action"] == "up"]
    assert [r["result"]["after"] for r in ups] == [1, 2, 3]
    at_max = monitor.step()
    assert at_max["decision"]["action"] == "hold" and "max 3" in at_max["decision"]["reason"]

    work_queue.purge()
    down = monitor.step()
    assert down["decision"]["action"] == "down" and down["result"]["after"] == 2
    assert actuator.observe().current == 2 and not actuator.observe().updating

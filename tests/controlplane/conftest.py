"""Fixtures of the control-plane tests: stacks on the real Keystone + Heat + Zaqar on loopback.

The control plane itself (``controlplane``, session-wide) and the demo user's ``heat_session``
live in the root tests/conftest.py, shared with tests/infra. ``stacks`` creates stacks with an
AutoScalingGroup whose members are ``OS::Heat::None`` (no Nova) and deletes them after the test;
``shared_stack`` is one such stack the read-only tests of a module share.
"""

from __future__ import annotations

import uuid

import pytest

from devenv.heat import NO_NOVA_ENVIRONMENT, wait_no_deletions, wait_stack


def group_template(with_policies: bool = True) -> dict:
    """A stack: AutoScalingGroup of OS::Nova::Server (mapped to OS::Heat::None), up/down policies."""
    tmpl = {
        "heat_template_version": "2018-08-31",
        "parameters": {
            "desired_capacity": {"type": "number", "default": 1},
            "min_size": {"type": "number", "default": 1},
            "max_size": {"type": "number", "default": 4},
            # The policies' cooldown starts after each resize they make; the group's own starts
            # when it is created (Heat counts creation as a resize), so keep that one at 0.
            "cooldown": {"type": "number", "default": 0},
            "group_cooldown": {"type": "number", "default": 0},
        },
        "resources": {
            "workers": {
                "type": "OS::Heat::AutoScalingGroup",
                "properties": {
                    "min_size": {"get_param": "min_size"},
                    "max_size": {"get_param": "max_size"},
                    "desired_capacity": {"get_param": "desired_capacity"},
                    "cooldown": {"get_param": "group_cooldown"},
                    "resource": {
                        "type": "OS::Nova::Server",
                        "properties": {"image": "consumer-template", "flavor": "m1.small"},
                    },
                },
            },
        },
        "outputs": {"current_size": {"value": {"get_attr": ["workers", "current_size"]}}},
    }
    if with_policies:
        for name, step in (("scale_up", 1), ("scale_down", -1)):
            tmpl["resources"][name] = {
                "type": "OS::Heat::ScalingPolicy",
                "properties": {
                    "adjustment_type": "change_in_capacity",
                    "auto_scaling_group_id": {"get_resource": "workers"},
                    "scaling_adjustment": step,
                    "cooldown": {"get_param": "cooldown"},
                },
            }
            tmpl["outputs"][f"{name}_signal_url"] = {"value": {"get_attr": [name, "signal_url"]}}
            tmpl["outputs"][f"{name}_alarm_url"] = {"value": {"get_attr": [name, "alarm_url"]}}
    return tmpl


class Stacks:
    """Creates stacks through the orchestration API and deletes them all at teardown."""

    def __init__(self, session):
        from keystoneauth1 import adapter

        self.api = adapter.Adapter(session, service_type="orchestration", interface="public")
        self.created: list[str] = []

    def create(self, template: dict | None = None, timeout: float = 120, **params) -> dict:
        name = f"qw-test-{uuid.uuid4().hex[:8]}"
        resp = self.api.post(
            "/stacks",
            json={
                "stack_name": name,
                "template": template or group_template(),
                "environment": NO_NOVA_ENVIRONMENT,
                "parameters": params,
                "timeout_mins": 5,
            },
        )
        path = f"/stacks/{name}/{resp.json()['stack']['id']}"
        self.created.append(path)
        stack = self.wait(path, timeout)
        assert stack["stack_status"] == "CREATE_COMPLETE", stack.get("stack_status_reason")
        return stack

    def wait(self, path: str, timeout: float = 120) -> dict:
        return wait_stack(self.api, path, timeout)

    def output(self, stack: dict, key: str):
        path = f"/stacks/{stack['stack_name']}/{stack['id']}/outputs/{key}"
        return self.api.get(path).json()["output"]["output_value"]

    def delete(self, path: str) -> dict:
        self.api.delete(path, raise_exc=False)
        return self.wait(path)

    def wait_deletions(self, timeout: float = 120) -> None:
        """Wait until no stack of the project is being deleted (their trusts come and go)."""
        wait_no_deletions(self.api, timeout)

    def cleanup(self) -> None:
        """Delete every stack made here and wait: a delete overlapping the next test's create
        has made Heat's trust creation fail (403) in this one-process engine."""
        for path in self.created:
            self.api.delete(path, raise_exc=False)
        for path in self.created:
            self.wait(path)


@pytest.fixture
def stacks(heat_session):
    made = Stacks(heat_session)
    yield made
    made.cleanup()


@pytest.fixture(scope="module")
def shared_stack(heat_session):
    """One stack the read-only tests of a module share (min 1, max 4, two members)."""
    made = Stacks(heat_session)
    yield made.create(min_size=1, max_size=4, desired_capacity=2)
    made.cleanup()

"""The monitor's application credential on the real local cloud, for a stack with drain on: made in
Keystone with the access rules the Pulumi program declares for the ``local`` stack (rendered here,
:func:`infra.render.render`), it can do what the drain protocol needs (list the servers, set and
remove the one ``qw_drain`` metadata key, read its stack's resources) and the real Nova and Heat
refuse, with 401, everything else a member could do to the same servers: delete one, stop it, set
another metadata key, replace the whole metadata. The consumer's credential gains none of it.
"""

from __future__ import annotations

import pytest
from keystoneauth1 import adapter
from test_drain_scale_in import group  # noqa: F401 (the fixture: a Heat group of real servers)

from devenv.local_resources import application_credentials
from devenv.procs import wait_until
from infra import hot
from infra.render import render, stack_settings
from workload.autoscale.drain import DRAIN_KEY
from workload.autoscale.drain_heat import DrainingActuator
from workload.autoscale.heat import HeatActuator

pytestmark = pytest.mark.cloud

STACK = "local"


def rendered_rules(**changes) -> dict[str, list[dict]]:
    """Each credential's access rules as the program declares them for stack ``local``."""
    overrides, secret_keys = stack_settings(STACK, **changes)
    r = render(STACK, cfg_override=overrides, secret_keys=secret_keys)
    return {
        res.name.removeprefix("credentials-"): res.inputs["accessRules"]
        for res in r.resources
        if res.type.endswith("ApplicationCredential")
    }


@pytest.fixture
def app_credential(cloud):
    """Factory: a session of a fresh application credential of the demo user with ``rules``; each
    is deleted afterwards with its access rules (left behind, the next credential asking for the
    same rules would take them over, and a later destroy would remove them under it)."""
    with application_credentials(cloud.session("local")) as create:
        yield create


class Api:
    """One service of the catalog through a session; a 401 is the answer, not retried."""

    def __init__(self, session, service_type):
        self.api = adapter.Adapter(session, service_type=service_type, interface="public")

    def __call__(self, method, path, **kw):
        return self.api.request(path, method, raise_exc=False, allow_reauth=False, **kw)


def test_drain_rules_allow_the_protocol_and_nothing_else(cloud, member, group, app_credential):
    rules = rendered_rules(noDrain=False)
    assert rules["monitor"] != rendered_rules(noDrain=True)["monitor"]  # drain on is what grows them
    name, heat = group(1, "#cloud-config\n{}\n", name=hot.group_stack_name(STACK))
    nested = heat.get(f"/stacks/{name}/resources", params={"nested_depth": 1}).json()["resources"]
    server = next(r["physical_resource_id"] for r in nested if r["resource_type"] == "OS::Nova::Server")
    wait_until(lambda: member.compute.get_server(server).status == "ACTIVE", 300, "the member ACTIVE")
    monitor, consumer = app_credential(rules["monitor"]), app_credential(rules["consumer"])

    # Allowed: the draining actuator's own calls with nothing but the monitor's credential.
    records = []
    actuator = DrainingActuator(HeatActuator(monitor, name, mode="patch"), deadline_s=600, log=records.append)
    assert (actuator.observe().current, actuator.observe().leaving) == (1, 0)  # Heat resources + Nova list
    assert "asked 1 to drain" in actuator.apply(0, "test").detail  # PUT .../metadata/qw_drain
    assert DRAIN_KEY in member.compute.get_server(server).metadata
    # a monitor started afresh finds the drain in the server's metadata and can call it off
    actuator = DrainingActuator(HeatActuator(monitor, name, mode="patch"), deadline_s=600, log=records.append)
    assert actuator.observe().leaving == 1
    assert "called off 1" in actuator.apply(1, "test").detail  # DELETE .../metadata/qw_drain
    assert DRAIN_KEY not in member.compute.get_server(server).metadata
    assert [r["event"] for r in records] == ["drain", "drain-called-off"]

    nova, heat = Api(monitor, "compute"), Api(monitor, "orchestration")
    refused = {
        "delete a server": nova("DELETE", f"/servers/{server}"),
        "stop a server": nova("POST", f"/servers/{server}/action", json={"os-stop": None}),
        "set another metadata key": nova(
            "PUT", f"/servers/{server}/metadata/qw_role", json={"meta": {"qw_role": "x"}}
        ),
        "replace the metadata": nova("PUT", f"/servers/{server}/metadata", json={"metadata": {}}),
        "create a server": nova("POST", "/servers", json={"server": {"name": "x"}}),
        "read a server's console": nova(
            "POST", f"/servers/{server}/action", json={"os-getConsoleOutput": {"length": 10}}
        ),
        "delete its stack": heat("DELETE", f"/stacks/{name}"),
        "list stacks": heat("GET", "/stacks"),
    }
    assert {what: r.status_code for what, r in refused.items()} == dict.fromkeys(refused, 401)

    cnova, cheat = Api(consumer, "compute"), Api(consumer, "orchestration")
    meta = {"meta": {DRAIN_KEY: "1"}}
    consumer_refused = {
        "list servers": cnova("GET", "/servers/detail"),
        "ask a drain": cnova("PUT", f"/servers/{server}/metadata/{DRAIN_KEY}", json=meta),
        "call a drain off": cnova("DELETE", f"/servers/{server}/metadata/{DRAIN_KEY}"),
        "read the stack": cheat("GET", f"/stacks/{name}"),
    }
    assert {w: r.status_code for w, r in consumer_refused.items()} == dict.fromkeys(consumer_refused, 401)

    # The refused calls did nothing: the server runs, with its metadata as Heat and the test left it.
    after = member.compute.get_server(server)
    assert after.status == "ACTIVE" and "qw_role" not in after.metadata and DRAIN_KEY not in after.metadata

"""Everything a stack makes in the cloud is owned by a Pulumi resource, so `pulumi destroy` removes it.

Cloud objects come from three places only: declared Pulumi resources (which the engine deletes),
the Heat stack's template (Heat deletes every resource of a stack it deletes), and the queue
pair's dynamic provider (whose delete drops both queues: proved against the real Zaqar in
test_infra_zaqar_provider.py). Provider calls are reads.
"""

from __future__ import annotations

import pulumi
import pytest
from infra_testlib import STACKS

from infra.render import render

# Resource types Heat deletes with the stack, including what they make on the side (the scaling
# policies' Keystone users in Heat's domain; the group's nested stack and its servers).
HEAT_OWNED = {
    "OS::Heat::AutoScalingGroup",
    "OS::Heat::ScalingPolicy",
    "OS::Nova::ServerGroup",
    "OS::Nova::Server",
}
READ_ONLY_CALLS = {"openstack:images/getImage:getImage", "openstack:compute/getFlavor:getFlavor"}


def _seen_opts(name):
    seen = []

    def setup():
        def record(a: pulumi.ResourceTransformationArgs):
            seen.append((a.type_, a.name, a.opts))
            return None

        pulumi.runtime.register_stack_transformation(record)

    return render(name, setup=setup), seen


@pytest.mark.parametrize("name", STACKS)
def test_every_declared_resource_is_deleted_by_destroy(name):
    r, seen = _seen_opts(name)
    assert {(t, n) for t, n, _ in seen} == {(x.type, x.name) for x in r.resources}  # nothing bypasses the SDK
    for type_, rname, opts in seen:
        assert not getattr(opts, "retain_on_delete", None), f"{rname} survives pulumi destroy"
        assert not getattr(opts, "protect", None), f"{rname} is protected: pulumi destroy would stop there"
        assert not getattr(opts, "import_", None), f"{rname} adopts an object made elsewhere"
        top_level = type_.startswith(("queue-workers:index:", "pulumi:providers:"))
        assert opts.parent is not None or top_level, f"{rname} has no owning component"
    assert {t for t, _ in r.calls} <= READ_ONLY_CALLS


@pytest.mark.parametrize("name", STACKS)
def test_every_heat_resource_is_inside_the_one_stack(name):
    r = render(name)
    stacks = [x for x in r.resources if x.type == "openstack:orchestration/stackV1:StackV1"]
    assert len(stacks) == 1
    t = r.template
    kinds = set()

    def walk(resources):
        for res in resources.values():
            kinds.add(res["type"])
            assert "deletion_policy" not in res, res  # Retain/Snapshot would outlive the stack
            inner = (res.get("properties") or {}).get("resource")
            if inner:
                walk({"member": inner})

    walk(t["resources"])
    assert kinds <= HEAT_OWNED, kinds - HEAT_OWNED
    # no nested templates from URLs or files: the template is the whole group
    assert "files" not in stacks[0].inputs.get("templateOpts", {})
    assert all(not str(k).startswith("http") for k in kinds)

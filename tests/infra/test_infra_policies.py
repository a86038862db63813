"""Each policy rule of infra/policies, on what the example stacks declare and on bad variants."""

from __future__ import annotations

import json

import pytest
from infra_testlib import STACKS, rendered
from pulumi_policy import PolicyResourceOptions, ResourceValidationArgs
from pulumi_policy.policy import PolicyCustomTimeouts

from infra import hot
from infra.components.image import bake_properties
from infra.mocks import baked_image
from infra.policies import rules


def args(
    resource_type: str, props: dict, name: str = "r", config: dict | None = None
) -> ResourceValidationArgs:
    opts = PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )
    return ResourceValidationArgs(
        resource_type, props, f"urn:pulumi:s::p::{resource_type}::{name}", name, opts, None, config
    )


def violations(check, a: ResourceValidationArgs) -> list[str]:
    found: list[str] = []
    check(a, lambda message, urn=None: found.append(message))
    return found


def ssh(prefix, lo=22, hi=22, proto="tcp", direction="ingress"):
    p = {"direction": direction, "ethertype": "IPv4", "protocol": proto, "remoteIpPrefix": prefix}
    if lo is not None:
        p.update(portRangeMin=lo, portRangeMax=hi)
    return args(rules.SEC_GROUP_RULE, p)


@pytest.mark.parametrize(
    "a",
    [
        ssh("0.0.0.0/0"),
        ssh("::/0"),
        ssh(None),
        ssh("0.0.0.0/0", 1, 65535),
        ssh("0.0.0.0/0", None, None, proto=None),
    ],
)
def test_no_ssh_from_anywhere_refuses(a):
    found = violations(rules.check_no_open_ssh, a)
    assert len(found) == 1 and "SSH" in found[0] and "sshCidrs" in found[0]


@pytest.mark.parametrize(
    "a",
    [
        ssh("198.51.100.0/24"),
        ssh("0.0.0.0/0", 443, 443),
        ssh("0.0.0.0/0", proto="udp"),
        ssh("0.0.0.0/0", direction="egress"),
    ],
)
def test_no_ssh_from_anywhere_allows(a):
    assert violations(rules.check_no_open_ssh, a) == []


def _stack_args(template: dict, params: dict | None = None, config=None):
    return args(
        rules.STACK_V1,
        {
            "templateOpts": {"Bin": hot.dump(template)},
            "parameters": params
            if params is not None
            else {"template_image_properties": json.dumps(bake_properties(baked_image()["properties"]))},
        },
        name="workers-stack",
        config=config,
    )


def test_max_size_cap():
    t = rendered(STACKS[0]).template
    assert violations(rules.check_max_size_cap, _stack_args(t)) == []
    found = violations(rules.check_max_size_cap, _stack_args(t, config={"maxSize": 3}))
    assert len(found) == 1 and "the cap is 3" in found[0]
    big = json.loads(json.dumps(t))
    big["resources"][hot.GROUP]["properties"]["max_size"] = 500
    assert "max_size 500" in violations(rules.check_max_size_cap, _stack_args(big))[0]


@pytest.mark.parametrize(
    "policy,ok",
    [
        ({"claim_ttl": 300, "claim_grace": 60}, True),
        ({"claim_ttl": 59, "claim_grace": 60}, False),
        ({"claim_ttl": 300, "claim_grace": 43201}, False),
        ({"claim_ttl": "300", "claim_grace": 60}, False),
        ({}, False),
    ],
)
def test_claim_ttl_in_range(policy, ok):
    found = violations(rules.check_claim_ttl, args(rules.QUEUE_PAIR, {"name": "jobs", "policy": policy}))
    assert (found == []) == ok, found


def test_template_image_baked():
    t = rendered(STACKS[0]).template
    assert violations(rules.check_template_image_baked, _stack_args(t)) == []
    bare = _stack_args(t, {"template_image_properties": "{}"})
    assert "fab bake-template" in violations(rules.check_template_image_baked, bare)[0]
    missing = _stack_args(t, {})
    assert "template_image_properties" in violations(rules.check_template_image_baked, missing)[0]
    stricter = _stack_args(t, config={"requiredProperties": ["qw_template_name", "qw_signed_by"]})
    assert "qw_signed_by" in violations(rules.check_template_image_baked, stricter)[0]
    half = bake_properties(baked_image(qw_bake_state="baking")["properties"])
    unfinished = _stack_args(t, {"template_image_properties": json.dumps(half)})
    assert "did not finish" in violations(rules.check_template_image_baked, unfinished)[0]


@pytest.mark.parametrize("name", STACKS)
def test_example_stacks_pass_every_policy(name):
    r = rendered(name)
    for rec in r.resources:
        for policy in rules.POLICIES:
            a = args(rec.type, rec.inputs, rec.name)
            assert violations(policy.validate, a) == [], (policy.name, rec.name)


def test_rules_do_not_fire_on_other_types():
    a = args("openstack:compute/instance:Instance", {"name": "x"})
    for policy in rules.POLICIES:
        assert violations(policy.validate, a) == []


def test_pack_module_builds_the_pack_from_these_rules():
    """The pack file (run by `pulumi preview --policy-pack infra/policies`) compiles and uses POLICIES."""
    import ast
    from pathlib import Path

    source = (Path(rules.__file__).with_name("__main__.py")).read_text()
    tree = ast.parse(source)
    calls = [
        n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "PolicyPack"
    ]
    assert len(calls) == 1
    assert any(k.arg == "policies" and getattr(k.value, "id", "") == "POLICIES" for k in calls[0].keywords)
    assert {p.name for p in rules.POLICIES} == {
        "no-ssh-from-anywhere",
        "max-size-under-cap",
        "claim-ttl-in-range",
        "template-image-baked",
    }

"""The policy rules of the queue-workers stacks (`pulumi preview --policy-pack infra/policies`).

Plain module: constructing a PolicyPack starts a gRPC server, so the pack itself lives in
``__main__.py`` and these rules are imported and tested on their own. Each ``check_*`` function
is a pulumi-policy ``validate`` function: ``(ResourceValidationArgs, report_violation)``.
Properties arrive under their wire (camelCase) names.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from typing import Any

import yaml
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from workload.queues.base import CLAIM_GRACE_RANGE, CLAIM_TTL_RANGE

SEC_GROUP_RULE = "openstack:networking/secGroupRule:SecGroupRule"
STACK_V1 = "openstack:orchestration/stackV1:StackV1"
QUEUE_PAIR = "pulumi-python:dynamic/queue-workers:QueuePair"
INSTANCE = "openstack:compute/instance:Instance"

DEFAULT_MAX_SIZE_CAP = 100
# What `fab bake-template` records on every template image it finishes (images/bake.py).
DEFAULT_BAKE_PROPERTIES = ["qw_template_name", "qw_template_version", "qw_template_hash", "qw_bake_state"]

Report = Callable[..., None]


def _anywhere(prefix: Any) -> bool:
    """True when a rule's remote prefix admits every address (unset means any)."""
    if not prefix:
        return True
    try:
        return ipaddress.ip_network(str(prefix), strict=False).prefixlen == 0
    except ValueError:
        return False


def check_no_open_ssh(args: ResourceValidationArgs, report: Report) -> None:
    """Ingress to port 22 (or all ports) must not come from 0.0.0.0/0 or ::/0."""
    if args.resource_type != SEC_GROUP_RULE:
        return
    p = args.props
    if p.get("direction") != "ingress" or p.get("remoteGroupId") or p.get("remoteAddressGroupId"):
        return
    proto = (p.get("protocol") or "any").lower()
    if proto not in ("tcp", "6", "any", ""):
        return
    lo, hi = p.get("portRangeMin") or 0, p.get("portRangeMax") or 0
    covers_ssh = (not lo and not hi) or (int(lo or 0) <= 22 <= int(hi or 65535))
    if covers_ssh and _anywhere(p.get("remoteIpPrefix")):
        report(
            f"security group rule {args.name!r} opens SSH (port 22) to "
            f"{p.get('remoteIpPrefix') or 'any address'}: list the networks that need it in sshCidrs"
        )


def _template(props: Mapping[str, Any]) -> dict:
    text = (props.get("templateOpts") or {}).get("Bin") or ""
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return {}


def check_max_size_cap(args: ResourceValidationArgs, report: Report) -> None:
    """No AutoScalingGroup in a Heat stack may grow beyond the cap (config ``maxSize``)."""
    if args.resource_type != STACK_V1:
        return
    cap = int(args.get_config().get("maxSize", DEFAULT_MAX_SIZE_CAP))
    for name, res in (_template(args.props).get("resources") or {}).items():
        if res.get("type") != "OS::Heat::AutoScalingGroup":
            continue
        size = (res.get("properties") or {}).get("max_size")
        if not isinstance(size, int) or size > cap:
            report(
                f"scaling group {name!r} in stack {args.name!r} has max_size {size!r}: the cap is {cap} "
                "(lower maxSize, or raise the policy's maxSize)"
            )


def check_claim_ttl(args: ResourceValidationArgs, report: Report) -> None:
    """A queue's claim ttl and grace must be in Zaqar's range (60..43200 s)."""
    if args.resource_type != QUEUE_PAIR:
        return
    policy = args.props.get("policy") or {}
    for key, (lo, hi) in (("claim_ttl", CLAIM_TTL_RANGE), ("claim_grace", CLAIM_GRACE_RANGE)):
        value = policy.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
            report(f"queue {args.props.get('name')!r}: {key} = {value!r} is outside {lo}..{hi} seconds")


def check_template_image_baked(args: ResourceValidationArgs, report: Report) -> None:
    """The worker group's template image must carry the bake's properties."""
    if args.resource_type != STACK_V1:
        return
    required = list(args.get_config().get("requiredProperties", DEFAULT_BAKE_PROPERTIES))
    raw = (args.props.get("parameters") or {}).get("template_image_properties")
    if raw is None:
        report(
            f"stack {args.name!r} does not say which template image properties it boots from "
            "(parameter template_image_properties)"
        )
        return
    try:
        props = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (ValueError, TypeError):
        report(f"stack {args.name!r}: template_image_properties is not a JSON object: {raw!r}")
        return
    missing = [k for k in required if not props.get(k)]
    if missing:
        report(
            f"stack {args.name!r} boots an image without the bake's properties {missing}: "
            "use an image made by `fab bake-template`"
        )
    elif props.get("qw_bake_state", "complete") != "complete":
        report(
            f"stack {args.name!r} boots an image whose bake did not finish "
            f"(qw_bake_state={props['qw_bake_state']!r}): run `fab bake-template` again"
        )


POLICIES: list[Policy] = [
    ResourceValidationPolicy(
        name="no-ssh-from-anywhere",
        description="SSH is never open to 0.0.0.0/0 or ::/0.",
        validate=check_no_open_ssh,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="max-size-under-cap",
        description="A worker group's max size stays under a cap.",
        validate=check_max_size_cap,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(
            properties={"maxSize": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_SIZE_CAP}}
        ),
    ),
    ResourceValidationPolicy(
        name="claim-ttl-in-range",
        description="Claim ttl and grace are within Zaqar's 60..43200 s.",
        validate=check_claim_ttl,
        enforcement_level=EnforcementLevel.MANDATORY,
    ),
    ResourceValidationPolicy(
        name="template-image-baked",
        description="The worker group boots a template image the bake made.",
        validate=check_template_image_baked,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(
            properties={
                "requiredProperties": {
                    "type": "array",
                    "items": {"type": "string"},
                    "default": DEFAULT_BAKE_PROPERTIES,
                }
            }
        ),
    ),
]

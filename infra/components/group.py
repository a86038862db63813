"""WorkerGroup: the Heat stack holding the consumers' AutoScalingGroup and scaling policies."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_openstack as openstack

from infra import hot
from infra.config import TYPE_PREFIX, StackConfig


@dataclasses.dataclass
class WorkerGroupArgs:
    config: StackConfig
    stack_name: str  # the Heat stack's name (the monitor's access rules name it)
    image_id: pulumi.Input[str]
    image_properties: pulumi.Input[dict]  # the bake's qw_* properties
    image_label: pulumi.Input[str]  # short name of the template for server metadata
    security_group: pulumi.Input[str]  # id (or name) of the consumers' security group
    auth_url: str  # Keystone the consumers authenticate against
    credential_id: pulumi.Input[str]
    credential_secret: pulumi.Input[str]
    # the secret broker settings of an amqp stack (default: from the config, infra.hot.amqp_secret_env)
    amqp_env: pulumi.Input[dict] | None = None


def _output(outputs: Sequence[Any] | None, key: str) -> Any:
    """The value of Heat output ``key`` in the stack's ``stack_outputs`` list."""
    for item in outputs or []:
        if isinstance(item, dict) and not hasattr(item, "output_key"):
            k, v = (
                item.get("output_key", item.get("outputKey")),
                item.get("output_value", item.get("outputValue")),
            )
        else:
            k, v = item.output_key, item.output_value
        if k == key:
            return v
    return None


class WorkerGroup(pulumi.ComponentResource):
    """Consumers from the template image, scaled by Heat between minSize and maxSize.

    Outputs: ``stack_id``, ``scale_up_url``, ``scale_down_url`` (POST with a token),
    ``current_size`` and ``template`` (the HOT text sent to Heat).
    """

    stack_id: pulumi.Output[str]
    scale_up_url: pulumi.Output[str]
    scale_down_url: pulumi.Output[str]
    current_size: pulumi.Output[str]

    def __init__(self, name: str, args: WorkerGroupArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}WorkerGroup", name, None, opts)
        cfg = args.config
        self.template = hot.dump(hot.build(cfg, args.stack_name))
        amqp = hot.amqp_secret_env(cfg, "consumer") if args.amqp_env is None else args.amqp_env
        creds_b64: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(args.credential_id, args.credential_secret, amqp).apply(
                lambda v: base64.b64encode(
                    hot.credentials_env(
                        args.auth_url, cfg.region, v[0], v[1], {**cfg.consumer_secret_env, **v[2]}
                    ).encode()
                ).decode()
            )
        )
        self.stack = openstack.orchestration.StackV1(
            f"{name}-stack",
            name=args.stack_name,
            region=cfg.region,
            template_opts={"Bin": self.template},
            parameters={
                hot.P_IMAGE: args.image_id,
                hot.P_SECURITY_GROUP: args.security_group,
                hot.P_DESIRED: str(cfg.desired_size),
                hot.P_TEMPLATE_PROPERTIES: pulumi.Output.from_input(args.image_properties).apply(
                    lambda p: json.dumps(p or {}, sort_keys=True)
                ),
                hot.P_TEMPLATE_LABEL: args.image_label,
                hot.P_CREDENTIALS_ENV: creds_b64,
            },
            timeout=cfg.stack_timeout,
            disable_rollback=False,
            # The monitor may PATCH `desired` (heat-mode patch); a later `pulumi up` after a refresh
            # must not undo its decision. desiredSize is the size at creation.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=[f"parameters.{hot.P_DESIRED}"]),
        )
        outs = self.stack.stack_outputs
        self.stack_id = self.stack.id
        self.scale_up_url = outs.apply(lambda o: _output(o, hot.OUT_SCALE_UP_URL))
        self.scale_down_url = outs.apply(lambda o: _output(o, hot.OUT_SCALE_DOWN_URL))
        self.current_size = outs.apply(lambda o: _output(o, hot.OUT_CURRENT_SIZE))
        self.register_outputs(
            {
                "stack_id": self.stack_id,
                "scale_up_url": self.scale_up_url,
                "scale_down_url": self.scale_down_url,
                "current_size": self.current_size,
            }
        )

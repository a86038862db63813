"""Monitor: one small server from the template image running the monitor container."""

from __future__ import annotations

import base64
import dataclasses
import re

import pulumi
import pulumi_openstack as openstack

from infra import hot
from infra.config import TYPE_PREFIX, StackConfig, program_env

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def monitor_env(cfg: StackConfig, stack: str) -> dict[str, str]:
    """The monitor container's settings (not secret): options of `python -m workload monitor`.

    Where it watches and what it drives, then every monitor option a stack setting sets
    (:func:`infra.config.program_env`: the policy, its priors, windows, steps and cooldowns). The
    Heat actuator finds the group, its policies and their signal URLs from the stack named by
    QW_GROUP (the credential may read and signal that stack only).
    """
    env = {
        "QW_QUEUE": cfg.queue_name,
        "QW_QUEUE_BACKEND": cfg.queue_backend,
        "QW_REGION": cfg.region,
        "QW_ACTUATOR": "heat",
        "QW_GROUP": stack,
        **hot.amqp_env(cfg),
    }
    env.update(program_env(cfg, "monitor"))
    return env


@dataclasses.dataclass
class MonitorArgs:
    config: StackConfig
    image_id: pulumi.Input[str]
    security_group: pulumi.Input[str]  # name of the security group
    stack_name: str
    stack_id: pulumi.Input[str]  # makes the monitor wait for the group's stack
    scale_up_url: pulumi.Input[str]
    scale_down_url: pulumi.Input[str]
    auth_url: str
    credential_id: pulumi.Input[str]
    credential_secret: pulumi.Input[str]
    # the secret broker settings of an amqp stack (default: from the config, infra.hot.amqp_secret_env)
    amqp_env: pulumi.Input[dict] | None = None


class MonitorServer(pulumi.ComponentResource):
    """The server that runs the monitor (workload/autoscale/monitor.py), watching the queue and
    signalling the group. Its user data is a secret."""

    server_id: pulumi.Output[str]

    def __init__(self, name: str, args: MonitorArgs, opts: pulumi.ResourceOptions | None = None):
        # Named "Monitor" before; the alias keeps existing stacks' monitor servers in place.
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=f"{TYPE_PREFIX}Monitor")])
        )
        super().__init__(f"{TYPE_PREFIX}MonitorServer", name, None, opts)
        cfg = args.config

        def render(v: list) -> str:
            stack_id, up, down, cred_id, cred_secret, amqp = v
            creds = hot.credentials_env(args.auth_url, cfg.region, cred_id, cred_secret, amqp)
            env = monitor_env(cfg, args.stack_name)
            # the group's scaling endpoints, for people and tools that signal by hand
            endpoints = [
                f"heat stack {args.stack_name}/{stack_id}",
                f"scale-up signal URL: {up}",
                f"scale-down signal URL: {down}",
            ]
            return hot.user_data(
                hot.cloud_config(
                    hot.MONITOR_ENV_FILE,
                    env,
                    hot.MONITOR_UNIT,
                    base64.b64encode(creds.encode()).decode(),
                    unit_text=hot.MONITOR_UNIT_TEXT,
                    comments=hot.amqp_comments(cfg) + endpoints,
                )
            )

        user_data: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(
                args.stack_id,
                args.scale_up_url,
                args.scale_down_url,
                args.credential_id,
                args.credential_secret,
                hot.amqp_secret_env(cfg, "monitor") if args.amqp_env is None else args.amqp_env,
            ).apply(render)
        )
        network = (
            openstack.compute.InstanceNetworkArgs(uuid=cfg.network)
            if _UUID.fullmatch(cfg.network)
            else openstack.compute.InstanceNetworkArgs(name=cfg.network)
        )
        self.server = openstack.compute.Instance(
            f"{name}-server",
            name=f"{cfg.server_name}-monitor-{pulumi.get_stack()}",
            region=cfg.region,
            image_id=args.image_id,
            flavor_name=cfg.monitor_flavor,
            key_pair=cfg.key_pair or None,
            networks=[network],
            security_groups=[args.security_group],
            user_data=user_data,
            metadata={"qw_role": "monitor", "qw_queue": cfg.queue_name, "qw_stack": args.stack_name},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.server_id = self.server.id
        self.register_outputs({"server_id": self.server_id})

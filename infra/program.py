"""The stack: what `pulumi up` declares, in order. Config is validated before any resource."""

from __future__ import annotations

import dataclasses
from typing import Any

import pulumi
import pulumi_openstack as openstack

from infra import config as config_mod
from infra import hot
from infra.components import (
    BrokerArgs,
    BrokerServer,
    Credentials,
    CredentialsArgs,
    MonitorArgs,
    MonitorServer,
    Network,
    NetworkArgs,
    TemplateImage,
    TemplateImageArgs,
    WorkerGroup,
    WorkerGroupArgs,
    WorkQueue,
    WorkQueueArgs,
)
from infra.components.flavors import check_flavors


def auth_url_of(cfg: config_mod.StackConfig) -> str:
    """Keystone URL for the servers: identityEndpoint, else the cloud's auth_url in clouds.yaml."""
    if cfg.identity_endpoint:
        return cfg.identity_endpoint
    try:
        import openstack.config

        region = openstack.config.OpenStackConfig().get_one(cloud=cfg.cloud, region_name=cfg.region)
        url = region.config.get("auth", {}).get("auth_url")
    except Exception as exc:  # noqa: BLE001 - reported below with what to do
        url, why = None, f" ({exc})"
    else:
        why = ""
    if not url:
        raise config_mod.ConfigError(
            "identityEndpoint",
            "",
            f"a Keystone URL: set it, or give cloud {cfg.cloud!r} an auth_url in clouds.yaml{why}",
        )
    return url


@dataclasses.dataclass
class Stack:
    """Every component of one stack (tests and `render` look inside)."""

    config: config_mod.StackConfig
    provider: Any
    queue: WorkQueue
    image: TemplateImage
    network: Network
    credentials: Credentials
    group: WorkerGroup
    monitor: MonitorServer | None
    broker: BrokerServer | None = None  # amqpBroker server


def declare(cfg: config_mod.StackConfig | None = None) -> Stack:
    """Declare the stack's resources from ``cfg`` (default: the running stack's validated config)."""
    cfg = cfg or config_mod.from_pulumi()  # raises ConfigError before anything is declared
    auth_url = auth_url_of(cfg)
    stack = pulumi.get_stack()
    provider = openstack.Provider("openstack", cloud=cfg.cloud, region=cfg.region)
    use = pulumi.ResourceOptions(providers=[provider])  # every openstack child uses this stack's cloud

    image = TemplateImage(
        "template",
        TemplateImageArgs(
            name=cfg.template_image_name, properties=cfg.template_image_properties, region=cfg.region
        ),
        use,
    )
    check_flavors(cfg, image)  # raises ConfigError before anything is made
    queue = WorkQueue("queue", WorkQueueArgs(config=cfg))
    server_broker = cfg.queue_backend == "amqp" and cfg.amqp_broker == "server"
    network = Network(
        "network",
        NetworkArgs(name=f"{cfg.server_name}-{stack}", ssh_cidrs=cfg.ssh_cidrs, monitor_group=server_broker),
        use,
    )
    broker = _broker(cfg, stack, image, network, use) if server_broker else None
    creds = _credentials(cfg, stack, use)
    group = WorkerGroup(
        "workers",
        WorkerGroupArgs(
            config=cfg,
            stack_name=hot.group_stack_name(stack),
            image_id=image.image_id,
            image_properties=image.properties,
            image_label=image.label,
            security_group=network.security_group_id,
            auth_url=auth_url,
            credential_id=creds.consumer_id,
            credential_secret=creds.consumer_secret,
            amqp_env=broker.consumer_env if broker else None,
        ),
        pulumi.ResourceOptions(providers=[provider], depends_on=[queue]),
    )
    result = Stack(cfg, provider, queue, image, network, creds, group, None, broker)
    if cfg.monitor_enabled:
        result.monitor = _monitor(result, stack, auth_url, use)
    _export(result)
    return result


def _broker(
    cfg: config_mod.StackConfig,
    stack: str,
    image: TemplateImage,
    network: Network,
    use: pulumi.ResourceOptions,
) -> BrokerServer:
    """The stack's own RabbitMQ server (amqpBroker server), reachable from both security groups."""
    return BrokerServer(
        "broker",
        BrokerArgs(
            config=cfg,
            stack=stack,
            image_id=image.image_id,
            consumer_group=network.security_group_id,
            monitor_group=network.monitor_group_id,
            ssh_cidrs=cfg.ssh_cidrs,
        ),
        use,
    )


def _credentials(cfg: config_mod.StackConfig, stack: str, use: pulumi.ResourceOptions) -> Credentials:
    """The consumers' (and the monitor's) application credentials, limited by access rules."""
    return Credentials(
        "credentials",
        CredentialsArgs(
            prefix=f"queue-workers-{stack}",
            queue=cfg.queue_name,
            dead_letter_queue=cfg.dead_letter_queue,
            stack_name=hot.group_stack_name(stack),
            roles=cfg.credential_roles,
            expires_at=cfg.credential_expires_at,
            monitor=cfg.monitor_enabled,
            drain=not cfg.no_drain,
        ),
        use,
    )


def _monitor(s: Stack, stack: str, auth_url: str, use: pulumi.ResourceOptions) -> MonitorServer:
    """The monitor's server: scales the group through its URLs with its own credential."""
    creds, broker = s.credentials, s.broker
    # Credentials made the monitor's credential (monitor=cfg.monitor_enabled)
    assert creds.monitor_id is not None and creds.monitor_secret is not None
    return MonitorServer(
        "monitor",
        MonitorArgs(
            config=s.config,
            image_id=s.image.image_id,
            security_group=s.network.monitor_group_name,
            stack_name=hot.group_stack_name(stack),
            stack_id=s.group.stack_id,
            scale_up_url=s.group.scale_up_url,
            scale_down_url=s.group.scale_down_url,
            auth_url=auth_url,
            credential_id=creds.monitor_id,
            credential_secret=creds.monitor_secret,
            amqp_env=broker.monitor_env if broker else None,
        ),
        use,
    )


def _export(s: Stack) -> None:
    """The stack outputs `pulumi stack output` shows."""
    pulumi.export("queue", s.queue.name)
    pulumi.export("dead_letter_queue", s.queue.dead_letter_queue)
    pulumi.export("template_image_id", s.image.image_id)
    pulumi.export("heat_stack", s.group.stack_id)
    pulumi.export("scale_up_url", s.group.scale_up_url)
    pulumi.export("scale_down_url", s.group.scale_down_url)
    pulumi.export("current_size", s.group.current_size)
    pulumi.export("monitor_server", s.monitor.server_id if s.monitor else None)
    pulumi.export("consumer_credential_id", s.credentials.consumer_id)
    pulumi.export("consumer_credential_secret", s.credentials.consumer_secret)
    if s.broker is not None:
        pulumi.export("broker_server", s.broker.server.id)
        pulumi.export("broker_address", s.broker.host)
        # the CA is no secret (its key was never kept): tools in the network verify the broker with it
        pulumi.export("broker_ca_pem", pulumi.Output.unsecret(s.broker.ca_pem))

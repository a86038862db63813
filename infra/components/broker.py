"""BrokerServer: the stack's own RabbitMQ server (``amqpBroker: server``), see :mod:`infra.broker`.

Declared in the order the certificate needs: the security group, the Neutron port (its fixed IP
is the broker's address), the certificate for that address and the users' passwords, the data
volume, then the server on that port.

**Data on a Cinder volume, not the flavor's ephemeral disk.** The broker holds every message not
yet done; an ephemeral disk lives and dies with the server, so replacing it (a new template image,
another flavor or user data) would lose the queues' contents. A volume outlives the server
(``delete_on_termination`` false) and is attached again to its replacement; ``pulumi destroy``
deletes it. The cost: the cloud needs Cinder. **``amqpBrokerVolumeSize: 0``** is for a cloud
without it (the local cloud of this repository): no volume, the data on the server's root disk,
lost whenever the server is replaced or deleted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import pulumi
import pulumi_openstack as openstack

from infra import broker as B
from infra.broker_provider import BrokerCertificate, BrokerPasswords
from infra.components.network import egress_rules, ssh_rules
from infra.config import TYPE_PREFIX, StackConfig

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclasses.dataclass
class BrokerArgs:
    config: StackConfig
    stack: str  # the Pulumi stack's name (server, port and volume names)
    image_id: pulumi.Input[str]
    consumer_group: pulumi.Input[str]  # id of the consumers' security group
    monitor_group: pulumi.Input[str]  # id of the monitor's security group
    ssh_cidrs: Sequence[str] = ()


class BrokerServer(pulumi.ComponentResource):
    """One RabbitMQ server. ``host`` (its fixed IP), ``ca_pem``; ``consumer_env`` / ``monitor_env``:
    the secret part of each role's env file (an ``amqps://`` URL with that role's user, the CA in it)."""

    host: pulumi.Output[str]
    ca_pem: pulumi.Output[str]
    consumer_env: pulumi.Output[dict]
    monitor_env: pulumi.Output[dict]

    def __init__(self, name: str, args: BrokerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}BrokerServer", name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)
        server_name = B.server_name(cfg, args.stack)
        self.group = self._security_group(name, server_name, args, child)
        self.port = openstack.networking.Port(
            f"{name}-port",
            name=server_name,
            region=cfg.region,
            network_id=self._network_id(cfg),
            security_group_ids=[self.group.id],
            admin_state_up=True,
            opts=child,
        )
        self.host = self.port.all_fixed_ips.apply(lambda ips: sorted(ips or [""], key=_v4_first)[0])
        self.certificate = BrokerCertificate(
            f"{name}-certificate", server_name, self.port.all_fixed_ips, opts=child
        )
        self.passwords = BrokerPasswords(f"{name}-passwords", list(B.USERS), opts=child)
        self.volume: openstack.blockstorage.Volume | None = None
        if cfg.amqp_broker_volume_size:
            self.volume = openstack.blockstorage.Volume(
                f"{name}-data",
                name=f"{server_name}-data",
                region=cfg.region,
                size=cfg.amqp_broker_volume_size,
                description="queue-workers broker data (RabbitMQ mnesia and quorum queue logs)",
                opts=child,
            )
        self.server = self._server(name, server_name, args, child)
        self.ca_pem = self.certificate.ca_pem
        self.consumer_env = self._role_env("consumer")
        self.monitor_env = self._role_env("monitor")
        self.register_outputs({"host": self.host, "server_id": self.server.id, "ca_pem": self.ca_pem})

    def _role_env(self, role: str) -> pulumi.Output[dict]:
        return pulumi.Output.secret(
            pulumi.Output.all(self.host, self.passwords.passwords, self.certificate.ca_pem).apply(
                lambda v: B.role_env(role, v[0], v[1], v[2])
            )
        )

    def _network_id(self, cfg: StackConfig) -> pulumi.Input[str]:
        if _UUID.fullmatch(cfg.network):
            return cfg.network
        found = openstack.networking.get_network_output(
            name=cfg.network, region=cfg.region, opts=pulumi.InvokeOptions(parent=self)
        )
        return found.id

    def _server(self, name: str, server_name: str, args: BrokerArgs, child: pulumi.ResourceOptions):
        cfg = args.config
        volume_id = self.volume.id if self.volume is not None else None
        user_data: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(
                volume_id,
                self.certificate.ca_pem,
                self.certificate.cert_pem,
                self.certificate.key_pem,
                self.passwords.hashes,
                self.passwords.passwords,
            ).apply(
                lambda v: B.user_data(
                    cfg, v[0], {"ca_pem": v[1], "cert_pem": v[2], "key_pem": v[3]}, v[4], v[5][B.STACK_USER]
                )
            )
        )
        return openstack.compute.Instance(
            f"{name}-server",
            name=server_name,
            region=cfg.region,
            image_id=args.image_id,
            flavor_name=cfg.amqp_broker_flavor,
            key_pair=cfg.key_pair or None,
            networks=[{"port": self.port.id}],
            block_devices=self._block_devices(args.image_id, volume_id),
            user_data=user_data,
            metadata={"qw_role": "broker", "qw_queue": cfg.queue_name, "qw_stack": args.stack},
            # its port and its volume attach to one server at a time: a replacement (new image or
            # user data) deletes the old server first, then boots the new one on both (without a
            # volume, the replacement starts with an empty broker)
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(delete_before_replace=True)),
        )

    @staticmethod
    def _block_devices(image_id: pulumi.Input[str], volume_id: pulumi.Input[str] | None) -> list | None:
        """The root disk from the image and the data volume; none without a volume (the server boots
        from its image as any other)."""
        if volume_id is None:
            return None
        return [
            {
                "uuid": image_id,
                "source_type": "image",
                "destination_type": "local",
                "boot_index": 0,
                "delete_on_termination": True,
            },
            {  # the data: kept when the server is replaced (see the module docstring)
                "uuid": volume_id,
                "source_type": "volume",
                "destination_type": "volume",
                "boot_index": -1,
                "delete_on_termination": False,
            },
        ]

    def _security_group(self, name: str, server_name: str, args: BrokerArgs, child: pulumi.ResourceOptions):
        group = openstack.networking.SecGroup(
            f"{name}-group",
            name=server_name,
            delete_default_rules=True,
            description="queue-workers broker: AMQPS from the consumers and the monitor, "
            "management API from the monitor",
            opts=child,
        )
        ingress = [
            ("amqps-consumers", B.AMQPS_PORT, args.consumer_group, "AMQPS from the consumers"),
            ("amqps-monitor", B.AMQPS_PORT, args.monitor_group, "AMQPS from the monitor"),
            ("management-monitor", B.MANAGEMENT_PORT, args.monitor_group, "management API from the monitor"),
        ]
        self.rules = egress_rules(name, group, "the broker pulls its image", child)
        for ethertype in ("IPv4", "IPv6"):
            v = ethertype.lower()
            for rule, port, remote, what in ingress:
                self.rules.append(
                    openstack.networking.SecGroupRule(
                        f"{name}-{rule}-{v}",
                        direction="ingress",
                        ethertype=ethertype,
                        protocol="tcp",
                        port_range_min=port,
                        port_range_max=port,
                        remote_group_id=remote,
                        security_group_id=group.id,
                        description=what,
                        opts=child,
                    )
                )
        self.rules += ssh_rules(name, args.ssh_cidrs, group, child)
        return group


def _v4_first(address: str) -> tuple[int, str]:
    """IPv4 addresses before IPv6 ones (the URL's host; every address is in the certificate)."""
    return (0 if "." in address else 1, address)

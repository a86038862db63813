"""Network: the servers' security group. No ingress unless listed; egress allowed."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence

import pulumi
import pulumi_openstack as openstack

from infra.config import TYPE_PREFIX


@dataclasses.dataclass
class NetworkArgs:
    name: str  # security group name
    ssh_cidrs: Sequence[str] = ()  # networks allowed to reach port 22; empty: no ingress
    # a group of the monitor's own (amqpBroker server: the broker lets in the management API
    # from the monitor only), with the same rules
    monitor_group: bool = False


class Network(pulumi.ComponentResource):
    """A security group that lets the servers reach the queue and Heat, and nothing reach them."""

    security_group_id: pulumi.Output[str]
    security_group_name: pulumi.Output[str]
    monitor_group_id: pulumi.Output[str]  # the monitor's group (the consumers' unless monitor_group)
    monitor_group_name: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # delete_default_rules: Neutron's defaults are replaced by the explicit egress rules below,
        # so what the group allows is exactly what this file says.
        self.rules: list = []
        self.group = self._group(f"{name}-consumers", name, args.name, args, child)
        self.monitor_group = None
        if args.monitor_group:
            self.monitor_group = self._group(
                f"{name}-monitor", f"{name}-monitor", f"{args.name}-monitor", args, child
            )
        self.security_group_id = self.group.id
        self.security_group_name = self.group.name
        mon = self.monitor_group or self.group
        self.monitor_group_id, self.monitor_group_name = mon.id, mon.name
        self.register_outputs(
            {
                "security_group_id": self.security_group_id,
                "security_group_name": self.security_group_name,
                "monitor_group_id": self.monitor_group_id,
            }
        )

    def _group(self, resource: str, prefix: str, group_name: str, args: NetworkArgs, child):
        """A security group: egress to anywhere, SSH from ``ssh_cidrs``; rule names start with ``prefix``."""
        group = openstack.networking.SecGroup(
            resource,
            name=group_name,
            delete_default_rules=True,
            description="queue-workers servers: egress only, SSH from listed networks",
            opts=child,
        )
        self.rules += egress_rules(prefix, group, "servers reach the queue, Heat and Keystone", child)
        self.rules += ssh_rules(prefix, args.ssh_cidrs, group, child)
        return group


def egress_rules(prefix: str, group, description: str, child: pulumi.ResourceOptions) -> list:
    """Egress to anywhere from ``group``, IPv4 and IPv6 (its default rules are deleted, so these are
    what it allows out); rule names start with ``prefix``."""
    return [
        openstack.networking.SecGroupRule(
            f"{prefix}-egress-{ethertype.lower()}",
            direction="egress",
            ethertype=ethertype,
            security_group_id=group.id,
            description=description,
            opts=child,
        )
        for ethertype in ("IPv4", "IPv6")
    ]


def ssh_rules(prefix: str, cidrs: Sequence[str], group, child: pulumi.ResourceOptions) -> list:
    """Ingress on port 22 into ``group`` from each of ``cidrs``; rule names start with ``prefix``."""
    rules = []
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr)
        rules.append(
            openstack.networking.SecGroupRule(
                f"{prefix}-ssh-{str(net).replace('/', '-').replace(':', '_')}",
                direction="ingress",
                ethertype=f"IPv{net.version}",
                protocol="tcp",
                port_range_min=22,
                port_range_max=22,
                remote_ip_prefix=str(net),
                security_group_id=group.id,
                description="SSH",
                opts=child,
            )
        )
    return rules

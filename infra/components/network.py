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


class Network(pulumi.ComponentResource):
    """A security group that lets the servers reach the queue and Heat, and nothing reach them."""

    security_group_id: pulumi.Output[str]
    security_group_name: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # delete_default_rules: Neutron's defaults are replaced by the explicit egress rules below,
        # so what the group allows is exactly what this file says.
        self.group = openstack.networking.SecGroup(
            f"{name}-consumers",
            name=args.name,
            delete_default_rules=True,
            description="queue-workers servers: egress only, SSH from listed networks",
            opts=child,
        )
        self.rules = []
        for ethertype in ("IPv4", "IPv6"):
            self.rules.append(
                openstack.networking.SecGroupRule(
                    f"{name}-egress-{ethertype.lower()}",
                    direction="egress",
                    ethertype=ethertype,
                    security_group_id=self.group.id,
                    description="servers reach the queue, Heat and Keystone",
                    opts=child,
                )
            )
        for cidr in args.ssh_cidrs:
            net = ipaddress.ip_network(cidr)
            self.rules.append(
                openstack.networking.SecGroupRule(
                    f"{name}-ssh-{str(net).replace('/', '-').replace(':', '_')}",
                    direction="ingress",
                    ethertype=f"IPv{net.version}",
                    protocol="tcp",
                    port_range_min=22,
                    port_range_max=22,
                    remote_ip_prefix=str(net),
                    security_group_id=self.group.id,
                    description="SSH",
                    opts=child,
                )
            )
        self.security_group_id = self.group.id
        self.security_group_name = self.group.name
        self.register_outputs(
            {"security_group_id": self.security_group_id, "security_group_name": self.security_group_name}
        )

"""Credentials: least-privilege application credentials for the consumers and the monitor."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pulumi
import pulumi_openstack as openstack

from infra.access_rules import consumer_rules, monitor_rules
from infra.config import TYPE_PREFIX


@dataclasses.dataclass
class CredentialsArgs:
    prefix: str  # credential names start with it (unique per user)
    queue: str
    dead_letter_queue: str
    stack_name: str  # the worker group's Heat stack the monitor may signal and update
    roles: Sequence[str] = ("member",)
    expires_at: str = ""  # ISO 8601; empty: never
    monitor: bool = True  # make the monitor's credential too
    drain: bool = True  # the monitor drains members before scale-in (its rules grow by that)


class Credentials(pulumi.ComponentResource):
    """Application credentials whose access rules allow only what each program does.

    ``consumer_id`` / ``consumer_secret``; ``monitor_id`` / ``monitor_secret`` (None when the
    monitor is off). The secrets are Pulumi secrets: encrypted in state, masked in output.
    """

    consumer_id: pulumi.Output[str]
    consumer_secret: pulumi.Output[str]
    monitor_id: pulumi.Output[str] | None
    monitor_secret: pulumi.Output[str] | None

    def __init__(self, name: str, args: CredentialsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}Credentials", name, None, opts)
        self.consumer = self._credential(
            name,
            args,
            "consumer",
            consumer_rules(args.queue, args.dead_letter_queue),
            "consumers: post/claim/renew/release/delete messages on their queues",
        )
        self.consumer_id = self.consumer.id
        self.consumer_secret = pulumi.Output.secret(self.consumer.secret)
        self.monitor = self.monitor_id = self.monitor_secret = None
        if args.monitor:
            self.monitor = self._credential(
                name,
                args,
                "monitor",
                monitor_rules(args.queue, args.dead_letter_queue, args.stack_name, args.drain),
                "monitor: queue stats, signal and update its own worker stack",
            )
            self.monitor_id = self.monitor.id
            self.monitor_secret = pulumi.Output.secret(self.monitor.secret)
        self.register_outputs(
            {
                "consumer_id": self.consumer_id,
                "consumer_secret": self.consumer_secret,
                "monitor_id": self.monitor_id,
                "monitor_secret": self.monitor_secret,
            }
        )

    def _credential(self, name: str, args: CredentialsArgs, role: str, rules: list, description: str):
        return openstack.identity.ApplicationCredential(
            f"{name}-{role}",
            name=f"{args.prefix}-{role}",
            description=description,
            roles=list(args.roles),
            access_rules=rules,
            expires_at=args.expires_at or None,
            unrestricted=False,
            # the secret is only known at creation: keep it out of logs and plain state
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["secret"]),
        )

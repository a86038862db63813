"""WorkQueue: the Zaqar work queue and its dead-letter queue, policy kept as queue metadata."""
from __future__ import annotations

import dataclasses
from typing import Optional

import pulumi

from infra.config import TYPE_PREFIX, StackConfig
from infra.zaqar_provider import QueuePair



@dataclasses.dataclass
class WorkQueueArgs:
    """What the queue pair is made from: the stack's config (name, policy, cloud and region)."""

    config: StackConfig
    url: str = ""  # an explicit Zaqar endpoint instead of the cloud's catalog (tests, local)
    project: str = ""  # X-Project-ID for a Zaqar without Keystone


class WorkQueue(pulumi.ComponentResource):
    """The work queue and its dead-letter queue; ``pulumi destroy`` deletes both."""

    name: pulumi.Output[str]
    dead_letter_queue: pulumi.Output[str]

    def __init__(self, name: str, args: WorkQueueArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}WorkQueue", name, None, opts)
        cfg = args.config
        self.pair = QueuePair(f"{name}-pair", {
            "backend": cfg.queue_backend, "name": cfg.queue_name, "cloud": cfg.cloud, "region": cfg.region,
            "url": args.url, "project": args.project, "policy": dataclasses.asdict(cfg.queue_policy),
        }, pulumi.ResourceOptions(parent=self))
        self.name = self.pair.name
        self.dead_letter_queue = self.pair.dead_letter_queue
        self.register_outputs({"name": self.name, "dead_letter_queue": self.dead_letter_queue,
                               "policy": self.pair.policy})

"""WorkQueue: the work queue and its dead-letter queue (Zaqar: policy as queue metadata; amqp: quorum
queues, dead-letter exchange and a broker policy on the broker amqpUrl names; on the stack's own
broker server, declared there at boot)."""

from __future__ import annotations

import dataclasses

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

    def __init__(self, name: str, args: WorkQueueArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}WorkQueue", name, None, opts)
        cfg = args.config
        props = {
            "backend": cfg.queue_backend,
            "name": cfg.queue_name,
            "cloud": cfg.cloud,
            "region": cfg.region,
            "url": args.url,
            "project": args.project,
            "policy": dataclasses.asdict(cfg.queue_policy),
        }
        if cfg.queue_backend == "amqp" and cfg.amqp_broker == "server":
            # the stack's own broker declares the pair itself at boot (infra.broker.queues_unit):
            # nothing outside its network could reach it to do so
            self.pair = None
            self.name = pulumi.Output.from_input(cfg.queue_name)
            self.dead_letter_queue = pulumi.Output.from_input(cfg.dead_letter_queue)
            self.register_outputs({"name": self.name, "dead_letter_queue": self.dead_letter_queue})
            return
        if cfg.queue_backend == "amqp":
            # the broker URL carries a password: a secret input and output, encrypted in state
            props.update(
                cloud="",
                region="",
                project="",
                url=pulumi.Output.secret(args.url or cfg.amqp_url),
                management_url=cfg.amqp_management_url,
            )
        self.pair = QueuePair(
            f"{name}-pair", props, pulumi.ResourceOptions(parent=self, additional_secret_outputs=["url"])
        )
        self.name = self.pair.name
        self.dead_letter_queue = self.pair.dead_letter_queue
        self.register_outputs(
            {"name": self.name, "dead_letter_queue": self.dead_letter_queue, "policy": self.pair.policy}
        )

"""Queue drivers: one interface (:mod:`workload.queues.base`), one module per backend.

``open_queue("zaqar", "jobs", url=..., project=...)`` or ``open_queue("sqs", "jobs",
endpoint_url=..., region=...)`` or ``open_queue("amqp", "jobs", url="amqp://...")`` gives a :class:`QueueDriver` bound to one queue.
"""
from __future__ import annotations

import inspect
from typing import Any

from workload.queues.base import (Claim, ClaimLost, InvalidInput, Message, QueueDriver, QueueError,
                                  QueueNotFound, QueuePolicy, QueueStats, ServiceUnavailable)
from workload.queues.deadletter import redrive

BACKENDS = ("zaqar", "sqs", "amqp")

__all__ = ["BACKENDS", "Claim", "ClaimLost", "InvalidInput", "Message", "QueueDriver", "QueueError",
           "QueueNotFound", "QueuePolicy", "QueueStats", "ServiceUnavailable", "driver_class",
           "open_queue", "redrive"]


def driver_class(backend: str) -> type[QueueDriver]:
    """The driver class of ``backend`` ("zaqar", "sqs" or "amqp")."""
    if backend == "zaqar":
        from workload.queues.zaqar import ZaqarQueue
        return ZaqarQueue
    if backend == "sqs":
        from workload.queues.sqs import SQSQueue
        return SQSQueue
    if backend == "amqp":
        from workload.queues.amqp import AMQPQueue
        return AMQPQueue
    raise InvalidInput("backend", backend, "one of " + ", ".join(BACKENDS))


def open_queue(backend: str, name: str, **options: Any) -> QueueDriver:
    """A driver for queue ``name`` on ``backend``.

    zaqar options: ``url``, ``project`` (a local Zaqar without Keystone), ``cloud``, ``region``
    (a real cloud through clouds.yaml / OS_CLOUD / OS_*), ``policy``, ``retry_policy``, ``timeout``.
    amqp options: ``url`` (amqp:// or amqps://), ``management_url``, ``policy``, ``prefetch``,
    ``heartbeat``, ``wait_seconds``, ``retry_policy``, ``timeout``.
    sqs options: ``endpoint_url``, ``region``, ``aws_access_key_id``, ``aws_secret_access_key``,
    ``aws_session_token``, ``policy``, ``wait_seconds``, ``retry_policy``.
    An option the backend does not know raises :class:`InvalidInput` naming it and the allowed ones.
    """
    cls = driver_class(backend)
    allowed = [p.name for p in inspect.signature(cls.__init__).parameters.values()
               if p.kind is p.KEYWORD_ONLY and not p.name.startswith("_")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidInput(f"{backend} option", unknown[0],
                           f"options for the {backend} backend are: {', '.join(allowed)}")
    return cls(name, **options)

"""RabbitMQ permissions and tags of each role's broker user on an amqp stack. Pure.

RabbitMQ grants per vhost three regexes over resource names (``configure``: declare and delete,
``write``: publish to an exchange, bind a queue; ``read``: consume, get and purge a queue) and
per user tags for the management API. What the broker lets each role do, measured against a real
RabbitMQ 3.10 (tests/infra/test_infra_amqp_permissions.py):

* a passive ``queue.declare`` (the driver's existence check and exact ready count) needs no
  permission at all;
* the management API's queue document (the unacknowledged count) needs a tag: ``monitoring``
  reads every queue of the vhosts the user has permissions on, and nothing else.

The gap: the driver publishes through the default exchange (``amq.default``), and write on it
lets a user publish to *any* queue of the vhost. So a consumer that posts replies or dead-letters
by hand (its ``--max-attempts`` backstop) needs write on ``amq.default``; without it (what
:func:`consumer` grants) it may only consume and settle its own queue and leaves dead-lettering to
the broker's delivery limit (``maxClaims``). Per-queue exchanges in the driver would close the gap.
"""
from __future__ import annotations

import re

NOTHING = "^$"  # a regex no resource name matches (RabbitMQ's way to grant nothing)


def consumer(queue: str) -> dict[str, str]:
    """Consume and settle (ack, nack) ``queue``; nothing else: no declare, delete or publish.
    (Read also allows ``queue.purge`` on it: RabbitMQ has no finer right.)"""
    return {"configure": NOTHING, "write": NOTHING, "read": f"^{re.escape(queue)}$", "tags": ""}


def monitor() -> dict[str, str]:
    """Read the queues' counts (passive declare; the management API through ``monitoring``), nothing
    else: no consume, publish, declare, delete or purge."""
    return {"configure": NOTHING, "write": NOTHING, "read": NOTHING, "tags": "monitoring"}


def stack_user(queue: str, dead_letter_queue: str) -> dict[str, str]:
    """amqpUrl's user: declare and delete the pair (and its ``-dlx`` exchange), set its policies."""
    names = "|".join(re.escape(n) for n in (queue, dead_letter_queue, queue + "-dlx"))
    return {"configure": f"^({names})$", "write": f"^({names})$", "read": f"^({names})$", "tags": "policymaker"}

"""RabbitMQ permissions and tags of each role's broker user on an amqp stack. Pure.

RabbitMQ grants per vhost three regexes over resource names (``configure``: declare and delete,
``write``: publish to an exchange, bind a queue; ``read``: consume, get and purge a queue) and
per user tags for the management API. What the broker lets each role do, measured against a real
RabbitMQ 3.10 (tests/infra/test_infra_amqp_permissions.py):

* a passive ``queue.declare`` (the driver's existence check and exact ready count) needs no
  permission at all;
* the management API's queue document (the unacknowledged count) needs a tag: ``monitoring``
  reads every queue of the vhosts the user has permissions on, and nothing else.

Publishing: the driver posts to a queue through an exchange of its own (``NAME-in``; to the
dead-letter queue through ``NAME-dlx``), never the default exchange, on which write would let a
user publish to *any* queue of the vhost. So a consumer gets write on its dead-letter exchange
(the ``--max-attempts`` backstop dead-letters by hand) and on the ``-in`` exchange of each reply
queue, and on nothing else.
"""

from __future__ import annotations

import re

NOTHING = "^$"  # a regex no resource name matches (RabbitMQ's way to grant nothing)


def consumer(queue: str, reply_queues: tuple[str, ...] = ()) -> dict[str, str]:
    """Consume and settle (ack, nack) ``queue``, dead-letter its messages, post to ``reply_queues``;
    nothing else: no declare or delete, no post to any other queue. (Read also allows
    ``queue.purge`` on it: RabbitMQ has no finer right.)"""
    exchanges = "|".join(re.escape(n) for n in (queue + "-dlx", *(r + "-in" for r in reply_queues)))
    return {"configure": NOTHING, "write": f"^({exchanges})$", "read": f"^{re.escape(queue)}$", "tags": ""}


def monitor() -> dict[str, str]:
    """Read the queues' counts (passive declare; the management API through ``monitoring``), nothing
    else: no consume, publish, declare, delete or purge."""
    return {"configure": NOTHING, "write": NOTHING, "read": NOTHING, "tags": "monitoring"}


def stack_user(queue: str, dead_letter_queue: str, also: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    """amqpUrl's user: declare and delete the pair (and its ``-dlx`` and ``-in`` exchanges), set its
    policies; the same for each further (queue, dead-letter queue) pair in ``also`` (a reply queue)."""
    pairs = ((queue, dead_letter_queue), *also)
    names = "|".join(re.escape(n) for q, d in pairs for n in (q, d, q + "-dlx", q + "-in"))
    return {
        "configure": f"^({names})$",
        "write": f"^({names})$",
        "read": f"^({names})$",
        "tags": "policymaker",
    }

"""Each role's broker user (infra.amqp_permissions) against a real RabbitMQ: what it needs passes,
everything else is refused by the broker."""

from __future__ import annotations

import uuid

import pytest

from infra import amqp_permissions as perms
from workload.queues import open_queue
from workload.queues.base import QueueError
from workload.queues.retry import RetryPolicy


def as_user(rabbitmq, role: str, name: str, grant: dict[str, str]):
    password = uuid.uuid4().hex
    url = rabbitmq.add_user(
        f"{role}-{name}",
        password,
        configure=grant["configure"],
        write=grant["write"],
        read=grant["read"],
        tags=grant["tags"],
    )
    return open_queue(
        "amqp",
        name,
        url=url,
        management_url=rabbitmq.management_url,
        retry_policy=RetryPolicy(attempts=1),
        timeout=10,
    )


@pytest.fixture
def pair(rabbitmq):
    name = f"qwperm-{uuid.uuid4().hex[:8]}"
    q = as_user(rabbitmq, "stack", name, perms.stack_user(name, name + "-dlq"))
    q.ensure()
    yield name
    q.drop()
    q.close()


def refused(call) -> bool:
    try:
        call()
    except QueueError as exc:
        return exc.title == "ACCESS_REFUSED"
    return False


def test_stack_user_declares_and_drops_only_its_pair(rabbitmq, pair):
    other = f"qwperm-other-{uuid.uuid4().hex[:6]}"
    q = as_user(rabbitmq, "stack", other, perms.stack_user(pair, pair + "-dlq"))
    try:
        assert refused(q.ensure)
    finally:
        q.close()


def test_consumer_consumes_settles_dead_letters_and_replies_but_nothing_else(rabbitmq, pair):
    admin = open_queue("amqp", pair, **rabbitmq.queue_options)
    admin.post([{"n": 1}, {"n": 2}, {"n": 3}])
    replies = f"{pair}-replies"
    reply_admin = open_queue("amqp", replies, **rabbitmq.queue_options)
    reply_admin.ensure()
    q = as_user(rabbitmq, "consumer", pair, perms.consumer(pair, (replies,)))
    reply = as_user(rabbitmq, "consumer", replies, perms.consumer(pair, (replies,)))
    try:
        claim = q.claim(3)
        assert claim and len(claim.messages) == 3
        q.delete(claim.messages[0])
        q.dead_letter(claim.messages[1], claim, "given up")  # the consumer's own backstop
        q.release(claim, claim.messages[2:])
        reply.post([{"reply": 1}])
        assert reply_admin.stats().free == 1 and admin.dead_letter_queue().stats().free == 1
        assert refused(lambda: q.post([{"n": 4}]))  # not to its own queue, nor any other
        assert refused(lambda: reply.dead_letter_queue().post([{"n": 5}]))
        assert refused(q.ensure) and refused(q.drop)
        assert refused(lambda: q.dead_letter_queue().claim(1))  # not its dead letters
    finally:
        q.close()
        reply.close()
        reply_admin.drop()
        reply_admin.close()
    assert admin.stats().free == 1  # one acked, one dead-lettered, one given back
    admin.close()


def test_monitor_reads_counts_only(rabbitmq, pair):
    admin = open_queue("amqp", pair, **rabbitmq.queue_options)
    admin.post([{"n": 1}])
    admin.close()
    q = as_user(rabbitmq, "monitor", pair, perms.monitor())
    try:
        assert q.stats().free == 1
        assert q.dead_letter_queue().stats().total == 0
        assert refused(lambda: q.claim(1)) and refused(lambda: q.post([{"n": 2}]))
        assert refused(q.purge) and refused(q.ensure) and refused(q.drop)
    finally:
        q.close()

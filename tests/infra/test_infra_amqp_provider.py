"""The queue pair's dynamic provider on amqp, against a real local RabbitMQ (fixture ``rabbitmq``).

Pulumi's mocks never call a dynamic provider, so check/create/diff/update/delete are called here
directly, as the engine would, and the broker's state is read back through its management API as
its administrator.
"""

from __future__ import annotations

import dataclasses
import uuid
from urllib.parse import quote

import dill
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from infra.zaqar_provider import QueuePairProvider
from workload.queues import open_queue
from workload.queues.base import QueuePolicy


def props(rabbitmq, name: str, url: str | None = None, **policy) -> dict:
    return {
        "backend": "amqp",
        "name": name,
        "cloud": "",
        "region": "",
        "project": "",
        "url": url or rabbitmq.amqp_url,
        "management_url": rabbitmq.management_url,
        "policy": dataclasses.asdict(QueuePolicy(**policy)),
    }


def queue_doc(rabbitmq, name: str) -> dict | None:
    r = rabbitmq.api("GET", "/queues")
    return next((q for q in r.json() if q["name"] == name and q["vhost"] == "/"), None)


def policy_doc(rabbitmq, queue: str) -> dict | None:
    found = [p for p in rabbitmq.api("GET", "/policies/%2F").json() if p["name"] == f"qw.{queue}"]
    return found[0]["definition"] if found else None


@pytest.fixture
def name():
    return f"qwinfra-{uuid.uuid4().hex[:10]}"


def test_check_wants_the_broker_url(rabbitmq, name):
    prov = QueuePairProvider()
    assert prov.check({}, props(rabbitmq, name)).failures == []
    bad = props(rabbitmq, name)
    bad["url"] = ""
    assert {f.property for f in prov.check({}, bad).failures} == {"url"}


def test_create_update_delete_the_pair_on_the_broker(rabbitmq, name):
    prov = QueuePairProvider()
    created = prov.create(props(rabbitmq, name, message_ttl=3600, max_claims=3))
    assert created.id == name and created.outs["dead_letter_queue"] == f"{name}-dlq"
    work, dead = queue_doc(rabbitmq, name), queue_doc(rabbitmq, f"{name}-dlq")
    assert work["arguments"]["x-queue-type"] == "quorum" and dead is not None
    definition = policy_doc(rabbitmq, name)
    assert definition["delivery-limit"] == 2 and definition["message-ttl"] == 3600 * 1000
    assert definition["dead-letter-exchange"] == f"{name}-dlx"

    # a message posted now survives the in-place update of the policy
    q = open_queue("amqp", name, **rabbitmq.queue_options)
    try:
        q.post([{"n": 1}])
    finally:
        q.close()
    new = props(rabbitmq, name, message_ttl=7200, max_claims=5)
    diff = prov.diff(name, created.outs, new)
    assert diff.changes and diff.replaces == []
    prov.update(name, created.outs, new)
    assert policy_doc(rabbitmq, name)["delivery-limit"] == 4
    assert policy_doc(rabbitmq, name)["message-ttl"] == 7200 * 1000
    q = open_queue("amqp", name, **rabbitmq.queue_options)
    try:
        assert q.stats().free == 1  # the ready count of a passive declare: exact, not the API's sample
    finally:
        q.close()

    prov.delete(name, new)
    assert queue_doc(rabbitmq, name) is None and queue_doc(rabbitmq, f"{name}-dlq") is None
    assert policy_doc(rabbitmq, name) is None and policy_doc(rabbitmq, f"{name}-dlq") is None


def test_a_new_password_updates_another_vhost_replaces(rabbitmq, name):
    prov = QueuePairProvider()
    old = props(rabbitmq, name)
    outs = {**old, "dead_letter_queue": f"{name}-dlq"}
    same_broker = props(rabbitmq, name, url=rabbitmq.amqp_url.replace("@", "x@", 1))
    diff = prov.diff(name, outs, same_broker)
    assert diff.changes and diff.replaces == []  # same queue, ensured again with the new login
    other_vhost = props(
        rabbitmq, name, url=rabbitmq.amqp_url.rsplit("/", 1)[0] + "/" + quote("other", safe="")
    )
    diff = prov.diff(name, outs, other_vhost)
    assert diff.replaces == ["url"] and diff.delete_before_replace
    assert not prov.diff(name, outs, props(rabbitmq, name)).changes


def test_refused_credentials_fail_the_create_clearly(rabbitmq, name):
    bad = rabbitmq.amqp_url_for(rabbitmq.workload[0], "wrong-password")
    with pytest.raises(Exception) as e:
        QueuePairProvider().create(props(rabbitmq, name, url=bad))
    assert "ACCESS_REFUSED" in str(e.value) and "wrong-password" not in str(e.value)
    assert queue_doc(rabbitmq, name) is None


def test_provider_pickles_without_a_connection(rabbitmq, name):
    """The engine pickles the provider; it must hold no connection thread (each call opens one)."""
    prov = QueuePairProvider()
    prov.create(props(rabbitmq, name))
    again = dill.loads(__import__("base64").b64decode(serialize_provider(prov)))
    again.delete(name, props(rabbitmq, name))
    assert queue_doc(rabbitmq, name) is None

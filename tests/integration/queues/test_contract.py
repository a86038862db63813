"""The queue contract, the same tests on every driver: real local Zaqar 23, moto's SQS server and a
real RabbitMQ 3.10. Where the services differ (how to list queues, their own error words), a
branch per backend asks the service itself."""

from __future__ import annotations

import json
import time
import uuid

import boto3
import pytest
import requests

from workload.queues import (
    ClaimLost,
    InvalidInput,
    QueueError,
    QueuePolicy,
    ServiceUnavailable,
    open_queue,
    redrive,
)


def existing_queues(backend, service, prefix: str) -> set[str]:
    """Queue names the service itself lists (not through the driver under test)."""
    if backend == "zaqar":
        names, marker = set(), None
        while True:  # pages of at most 20
            r = requests.get(
                f"{service.url}/v2/queues",
                params={"limit": 20, "marker": marker},
                headers={"X-Project-ID": service.project, "Client-ID": str(uuid.uuid4())},
            )
            r.raise_for_status()
            page = [q["name"] for q in r.json().get("queues", [])] if r.status_code == 200 else []
            if not page:
                break
            names.update(page)
            marker = page[-1]
    elif backend == "amqp":
        names = {q["name"] for q in service.api("GET", "/queues/%2F").json()}
    else:
        client = boto3.client(
            "sqs",
            endpoint_url=service.url,
            region_name=service.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        names = {
            u.rsplit("/", 1)[-1] for u in client.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
        }
    return {n for n in names if n.startswith(prefix)}


def wait_for(check, timeout: float):
    """Poll ``check`` until it returns something true (that value), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"not reached within {timeout} s"
        time.sleep(0.2)
    return value


def settles(get, expected, timeout: float = 10):
    """Poll ``get()`` until it equals ``expected``. Counts are approximate on SQS and RabbitMQ (a
    quorum queue reports its unacknowledged count about once a second); Zaqar's are exact."""
    deadline = time.monotonic() + timeout
    while (value := get()) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def drain(q, limit: int = 10):
    """Claim and delete until the queue is empty; the bodies in the order claimed."""
    bodies = []
    while (c := q.claim(limit=limit, ttl=60, grace=60)) is not None:
        for m in c.messages:
            bodies.append(m.body)
            q.delete(m, c)
    return bodies


def test_post_claim_delete(make_queue):
    q = make_queue()
    bodies = [{"n": 1}, "two", [3], None, 4.5]
    ids = q.post(bodies)
    assert len(set(ids)) == 5
    claim = q.claim(limit=10, ttl=60, grace=60)
    assert claim is not None and claim.ttl == 60
    assert sorted(json.dumps(m.body) for m in claim.messages) == sorted(json.dumps(b) for b in bodies)
    assert {m.id for m in claim.messages} == set(ids)
    assert all(m.age >= 0 for m in claim.messages)
    for m in claim.messages:
        q.delete(m, claim)
    assert q.claim(limit=10, ttl=60, grace=60) is None
    assert settles(lambda: q.stats().total, 0) == 0
    q.delete(claim.messages[0], None)  # deleting one that is gone is not an error


def test_delete_many_deletes_claimed_messages_in_bulk(make_queue):
    q = make_queue()
    n = q.limits.claim_limit[1]
    q.post([{"i": i} for i in range(n + 2)])
    claim = q.claim(limit=n, ttl=60, grace=60)
    assert claim is not None and len(claim.messages) == n
    q.delete_many(claim.messages, claim)
    rest = q.claim(limit=n, ttl=60, grace=60)
    assert rest is not None and len(rest.messages) == 2  # only the two never claimed are left
    assert {m.id for m in rest.messages}.isdisjoint(m.id for m in claim.messages)
    q.delete_many(rest.messages, rest)
    assert q.claim(limit=n, ttl=60, grace=60) is None
    assert settles(lambda: q.stats().total, 0) == 0
    q.delete_many(claim.messages, None)  # deleting what is gone is not an error


def test_posts_are_split_at_the_count_limit(make_queue):
    q = make_queue()
    n = q.limits.batch_messages * 2 + 3
    ids = q.post([{"i": i} for i in range(n)])
    assert len(set(ids)) == n
    assert sorted(b["i"] for b in drain(q)) == list(range(n))


def test_posts_are_split_at_the_byte_limit(make_queue):
    q = make_queue()
    third = "x" * (q.limits.batch_bytes // 3)  # three of these do not fit in one request
    ids = q.post([third + "a", third + "b", third + "c"])
    assert len(ids) == 3
    assert sorted(b[-1] for b in drain(q)) == ["a", "b", "c"]


def test_zaqar_refuses_exactly_what_the_driver_refuses(zaqar, queue_name):
    """A request of exactly 262144 bytes is accepted by the service; one byte more the driver
    refuses before sending, and the service itself would have refused it too."""
    q = open_queue("zaqar", queue_name("sz"), **zaqar.queue_options)
    q.ensure(QueuePolicy(max_claims=0))
    try:
        overhead = len(json.dumps({"messages": [{"body": "", "ttl": 3600}]}, separators=(",", ":")))
        fits = "y" * (q.limits.batch_bytes - overhead)
        assert len(q.post([fits])) == 1
        with pytest.raises(InvalidInput) as err:
            q.post([fits + "y"])
        assert "262144" in str(err.value)
        raw = json.dumps({"messages": [{"body": fits + "y", "ttl": 3600}]}, separators=(",", ":"))
        r = requests.post(
            f"{zaqar.url}/v2/queues/{q.name}/messages",
            data=raw,
            headers={
                "X-Project-ID": zaqar.project,
                "Client-ID": str(uuid.uuid4()),
                "Content-Type": "application/json",
            },
        )
        assert r.status_code == 400 and "too large" in r.json()["description"]
    finally:
        q.drop()


def test_release_makes_messages_claimable_at_once(make_queue):
    q = make_queue()
    q.post(["a", "b"])
    first = q.claim(limit=10, ttl=300, grace=60)
    assert q.claim(limit=10, ttl=60, grace=60) is None
    q.release(first)
    again = q.claim(limit=10, ttl=60, grace=60)
    assert again is not None and sorted(m.body for m in again.messages) == ["a", "b"]


def test_releasing_some_messages_of_a_claim(make_queue):
    """Handled ones deleted, one released while another is still being handled: the released one
    is claimable once the claim holds nothing else (Zaqar releases whole claims only)."""
    q = make_queue()
    q.post(["done", "retry", "slow"])
    c = q.claim(limit=10, ttl=300, grace=60)
    by_body = {m.body: m for m in c.messages}
    q.delete(by_body["done"], c)
    q.release(c, [by_body["retry"]])
    q.delete(by_body["slow"], c)
    again = q.claim(limit=10, ttl=60, grace=60)
    assert again is not None and [m.body for m in again.messages] == ["retry"]


def test_stats(make_queue, backend):
    q = make_queue()
    assert q.stats().as_dict() == {"free": 0, "claimed": 0, "total": 0, "oldest_age": None}
    q.post(list(range(5)))
    c = q.claim(limit=2, ttl=60, grace=60)
    assert settles(lambda: (lambda s: (s.free, s.claimed, s.total))(q.stats()), (3, 2, 5)) == (3, 2, 5)
    s = q.stats()
    if backend == "zaqar":
        assert s.oldest_age is not None and s.oldest_age >= 0
    else:  # SQS has no oldest age outside CloudWatch; RabbitMQ 3.10 none for quorum queues
        assert s.oldest_age is None
    for m in c.messages:
        q.delete(m, c)
    assert settles(lambda: q.stats().total, 3) == 3


def test_purge_empties_the_queue_not_its_dead_letter_queue(make_queue):
    q = make_queue()
    q.post(list(range(7)))
    q.dead_letter_queue().post(["kept"])
    q.purge()
    assert settles(lambda: q.stats().total, 0) == 0
    assert q.claim(limit=10, ttl=60, grace=60) is None
    assert settles(lambda: q.dead_letter_queue().stats().total, 1) == 1


def test_drop_removes_the_queue_and_its_dead_letter_queue(make_queue, backend, service):
    q = make_queue(QueuePolicy(max_claims=3))
    q.post(["x"])
    assert existing_queues(backend, service, q.name) == {q.name, q.name + "-dlq"}
    q.drop()
    assert existing_queues(backend, service, q.name) == set()
    q.drop()  # dropping what is gone is not an error


def test_ensure_sets_and_changes_the_dead_letter_policy(make_queue, backend, service):
    q = make_queue(QueuePolicy(max_claims=4, message_ttl=600))
    q.ensure(QueuePolicy(max_claims=2, message_ttl=900))
    if backend == "zaqar":
        meta = q.metadata()
        assert (meta["_max_claim_count"], meta["_dead_letter_queue"], meta["_default_message_ttl"]) == (
            2,
            q.name + "-dlq",
            900,
        )
        q.ensure(QueuePolicy(max_claims=0))
        assert q.metadata().get("_max_claim_count") is None
    elif backend == "amqp":  # the broker's own view of the queue: the policy in effect

        def effective(check):  # the management API shows it at its next statistics interval
            return wait_for(
                lambda: check(
                    service.api("GET", f"/queues/%2F/{q.name}").json().get("effective_policy_definition")
                    or {}
                ),
                15,
            )

        definition = effective(lambda d: d.get("delivery-limit") == 1 and d)
        assert (definition["delivery-limit"], definition["message-ttl"]) == (1, 900_000)
        assert definition["dead-letter-routing-key"] == q.name + "-dlq"
        q.ensure(QueuePolicy(max_claims=0))
        assert effective(lambda d: "delivery-limit" not in d)
    else:
        attrs = q._call("get_queue_attributes", safe=True, QueueUrl=q.url, AttributeNames=["All"])[
            "Attributes"
        ]
        redrive_policy = json.loads(attrs["RedrivePolicy"])
        assert int(redrive_policy["maxReceiveCount"]) == 2
        assert redrive_policy["deadLetterTargetArn"].endswith(":" + q.name + "-dlq")
        assert attrs["MessageRetentionPeriod"] == "900"


def test_consumer_side_dead_letter_and_redrive(make_queue):
    q = make_queue()
    q.post([{"job": 1}, {"job": 2}])
    c = q.claim(limit=10, ttl=60, grace=60)
    for m in c.messages:
        q.dead_letter(m, c, reason="handler exit 3")
    assert settles(lambda: q.stats().total, 0) == 0
    dlq = q.dead_letter_queue()
    dc = dlq.claim(limit=10, ttl=60, grace=60)
    envelopes = sorted((m.body for m in dc.messages), key=lambda b: b["body"]["job"])
    assert [e["body"] for e in envelopes] == [{"job": 1}, {"job": 2}]
    assert {e["dead_letter"]["original_id"] for e in envelopes} == {m.id for m in c.messages}
    assert all(e["dead_letter"]["reason"] == "handler exit 3" for e in envelopes)
    dlq.release(dc)
    seen = []
    assert redrive(dlq, q, progress=seen.append) == 2 and seen[-1] == 2
    assert settles(lambda: dlq.stats().total, 0) == 0
    assert sorted(b["job"] for b in drain(q)) == [1, 2]  # original bodies, unwrapped


def test_invalid_queue_name_surfaces_the_service_own_words(make_queue, backend, service):
    q = make_queue(ensure=False)
    if backend == "amqp":  # RabbitMQ takes spaces; it reserves names starting with amq.
        bad = open_queue(backend, "amq.reserved", **service.queue_options)
        with pytest.raises(QueueError) as err:
            bad.ensure()
        assert err.value.status == 403 and "amq." in err.value.description
        return
    bad = open_queue(backend, "no spaces allowed!", **service.queue_options)
    with pytest.raises(QueueError) as err:
        bad.ensure()
    # Ask the service the same thing directly and compare words.
    if backend == "zaqar":
        r = requests.put(
            f"{service.url}/v2/queues/no%20spaces%20allowed%21-dlq",
            json={},
            headers={"X-Project-ID": service.project, "Client-ID": str(uuid.uuid4())},
        )
        own = r.json()
        assert (err.value.title, err.value.description, err.value.status) == (
            own["title"],
            own["description"],
            r.status_code,
        )
    else:
        client = q._client
        with pytest.raises(client.exceptions.ClientError) as raw:
            client.create_queue(QueueName="no spaces allowed!-dlq")
        e = raw.value.response["Error"]
        assert (err.value.title, err.value.description) == (e["Code"], e["Message"])
    assert err.value.description


def test_renewing_or_deleting_with_a_lost_claim_raises_claim_lost(make_queue, backend):
    q = make_queue()
    q.post(["m"])
    c = q.claim(limit=1, ttl=60, grace=60)
    q.release(c)
    c2 = q.claim(limit=1, ttl=60, grace=60)  # someone else holds it now
    if backend in ("zaqar", "amqp"):
        with pytest.raises(ClaimLost):
            q.renew(c)
        with pytest.raises(ClaimLost) as err:
            q.delete(c.messages[0], c)
        if backend == "zaqar":
            assert err.value.status in (400, 403)
    else:
        # SQS accepts a superseded receipt handle silently (documented AWS behaviour); a
        # receipt handle that was never valid is refused.
        from dataclasses import replace

        bogus = replace(c.messages[0], receipt="not-a-receipt")
        with pytest.raises(QueueError):
            q.delete(bogus, c)
    q.delete(c2.messages[0], c2)


def test_a_safe_read_is_retried_after_a_5xx(flaky_queue):
    q, proxy, _ = flaky_queue(fail=1)
    assert settles(lambda: q.stats().total, 0) == 0
    assert len(proxy.requests) >= 2 and proxy.requests[0] == proxy.requests[1]


# Only the HTTP backends: AMQP publishes do not go over HTTP (the proxy sees only the management
# API); test_amqp.py posts during a broker outage.
@pytest.mark.parametrize("backend", ["zaqar", "sqs"])
def test_a_message_post_is_never_retried_and_the_error_is_the_service_own(flaky_queue, backend):
    q, proxy, direct = flaky_queue(fail=1)
    with pytest.raises(ServiceUnavailable) as err:
        q.post(["once"])
    assert len(proxy.requests) == 1
    assert err.value.status == 503 and "injected by the test proxy" in str(err.value)
    assert direct.stats().total == 0
    q.post(["now"])  # the proxy forwards from now on
    assert settles(lambda: direct.stats().total, 1) == 1


def test_retries_run_out_on_a_service_that_keeps_failing(flaky_queue):
    q, proxy, _ = flaky_queue(fail=100)
    with pytest.raises(ServiceUnavailable):
        q.stats()
    assert len(proxy.requests) == q.retry_policy.attempts

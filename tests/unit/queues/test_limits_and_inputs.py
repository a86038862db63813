"""Every bad input is refused before anything is sent, with an error naming the value and the range.

The drivers point at a closed loopback port: a request would fail with ServiceUnavailable, so an
InvalidInput here proves the check ran first.
"""

from __future__ import annotations

import pytest

from workload.queues import InvalidInput, QueuePolicy, open_queue, retry
from workload.queues.limits import SQS, ZAQAR

CLOSED = "http://127.0.0.1:9"  # discard port: nothing listens


@pytest.fixture(params=["zaqar", "sqs"])
def q(request):
    opts = (
        {"url": CLOSED, "project": "p"}
        if request.param == "zaqar"
        else {
            "endpoint_url": CLOSED,
            "region": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
    )
    return open_queue(request.param, "unit", retry_policy=retry.NO_RETRY, **opts)


def _bad_claims(limits):
    lo_ttl, hi_ttl = limits.claim_ttl
    lo_lim, hi_lim = limits.claim_limit
    return [
        ({"limit": lo_lim - 1, "ttl": 60, "grace": 60}, "limit", f"from {lo_lim} to {hi_lim}"),
        ({"limit": hi_lim + 1, "ttl": 60, "grace": 60}, "limit", f"from {lo_lim} to {hi_lim}"),
        ({"limit": 1, "ttl": lo_ttl - 1, "grace": 60}, "ttl", f"from {lo_ttl} to {hi_ttl}"),
        ({"limit": 1, "ttl": hi_ttl + 1, "grace": 60}, "ttl", f"from {lo_ttl} to {hi_ttl}"),
        ({"limit": 1, "ttl": 60, "grace": limits.claim_grace[1] + 1}, "grace", "to 43200"),
        ({"limit": "5", "ttl": 60, "grace": 60}, "limit", "a number"),
        ({"limit": True, "ttl": 60, "grace": 60}, "limit", "a number"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_bad_claim_arguments_are_named_with_their_range(q, case):
    kwargs, name, allowed = _bad_claims(q.limits)[case]
    with pytest.raises(InvalidInput) as err:
        q.claim(**kwargs)
    assert err.value.name == name
    assert allowed in str(err.value)
    assert repr(kwargs[name]) in str(err.value)


def test_zaqar_claim_ttl_and_grace_are_60_to_43200():
    assert ZAQAR.claim_ttl == ZAQAR.claim_grace == (60, 43200)
    assert ZAQAR.claim_limit == (1, 20)
    assert SQS.claim_limit == (1, 10)


@pytest.mark.parametrize(
    "kwargs,name",
    [({"ttl": 59}, "ttl"), ({"ttl": 1209601}, "ttl"), ({"delay": -1}, "delay"), ({"delay": 901}, "delay")],
)
def test_bad_post_arguments(q, kwargs, name):
    with pytest.raises(InvalidInput) as err:
        q.post([{"a": 1}], **kwargs)
    assert err.value.name == name


def test_a_body_over_the_size_limit_is_refused_naming_it(q):
    big = "x" * q.limits.message_bytes
    with pytest.raises(InvalidInput) as err:
        q.post([{"ok": 1}, big])
    assert err.value.name == "bodies[1] size"
    assert "262144 bytes" in str(err.value)


def test_a_body_that_is_not_json_is_refused_naming_it(q):
    with pytest.raises(InvalidInput) as err:
        q.post([1, {1, 2}])
    assert err.value.name == "bodies[1]"
    assert "JSON" in str(err.value)


def test_renew_checks_the_ttl(q):
    from workload.queues import Claim

    with pytest.raises(InvalidInput) as err:
        q.renew(Claim(id="c", messages=[], ttl=60, grace=60), ttl=10**6)
    assert err.value.name == "ttl"


@pytest.mark.parametrize(
    "field,value",
    [("claim_ttl", 59), ("message_ttl", 10), ("max_claims", -1), ("delay", 1000), ("claim_grace", 43201)],
)
def test_a_bad_policy_is_refused_before_sending(q, field, value):
    with pytest.raises(InvalidInput) as err:
        q.ensure(QueuePolicy(**{field: value}))
    assert err.value.name == field


def test_open_queue_names_the_backend_and_what_is_allowed():
    with pytest.raises(InvalidInput) as err:
        open_queue("rabbitmq", "jobs")
    assert "rabbitmq" in str(err.value) and "zaqar, sqs" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        open_queue("sqs", "jobs", url="http://x")
    assert "'url'" in str(err.value) and "endpoint_url" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        open_queue("zaqar", "jobs", endpoint_url="http://x")
    assert "endpoint_url" in str(err.value) and "project" in str(err.value)


def test_a_request_to_a_closed_port_is_a_service_unavailable_naming_the_endpoint(q):
    from workload.queues import ServiceUnavailable

    with pytest.raises(ServiceUnavailable) as err:
        q.stats()
    assert "127.0.0.1:9" in str(err.value)


def test_zaqar_from_openstack_environment_needs_no_network_until_a_call(monkeypatch):
    """The cloud path: keystoneauth session and catalog lookup from OS_* (nothing listens)."""
    from workload.queues import ServiceUnavailable

    for k in ("OS_CLOUD", "OS_CLIENT_CONFIG_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OS_AUTH_URL", "http://127.0.0.1:9/v3")
    for k, v in {
        "OS_USERNAME": "u",
        "OS_PASSWORD": "not-a-secret",
        "OS_PROJECT_NAME": "p",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_REGION_NAME": "RegionOne",
    }.items():
        monkeypatch.setenv(k, v)
    q = open_queue("zaqar", "jobs", retry_policy=retry.NO_RETRY)
    with pytest.raises(ServiceUnavailable) as err:
        q.stats()
    assert "127.0.0.1:9" in str(err.value)
    assert "not-a-secret" not in str(err.value)

"""Least-privilege application credentials, for real: Keystone creates them with the access rules
the Pulumi program declares (infra.access_rules), and Zaqar and Heat (keystonemiddleware with their
service types) let each credential do its job and refuse, with 401, everything else.
"""

from __future__ import annotations

import uuid

import pytest
import requests
from keystoneauth1 import adapter

from devenv.local_resources import application_credentials
from infra.access_rules import consumer_rules, monitor_rules
from workload.autoscale.heat import HeatActuator

pytestmark = pytest.mark.controlplane


@pytest.fixture
def app_credentials(controlplane, heat_session):
    """Factory: an application credential of the demo user with ``rules``; deleted afterwards with
    its access rules."""
    with application_credentials(heat_session, auth_url=controlplane.url) as create:
        yield create


class Api:
    """One service of the catalog through a session; 401s are not retried (that is the answer)."""

    def __init__(self, session, service_type):
        self.api = adapter.Adapter(session, service_type=service_type, interface="public")
        self.headers = {"Client-ID": str(uuid.uuid4())}

    def __call__(self, method, path, **kw):
        return self.api.request(path, method, raise_exc=False, allow_reauth=False, headers=self.headers, **kw)


@pytest.fixture
def queues(heat_session):
    """Two fresh queues (work + dead letter) with two messages, made by the project's user."""
    zaqar = Api(heat_session, "messaging")
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    dlq = f"{name}-dlq"
    for q in (name, dlq):
        assert zaqar("PUT", f"/v2/queues/{q}", json={}).status_code in (201, 204)
    resp = zaqar(
        "POST",
        f"/v2/queues/{name}/messages",
        json={"messages": [{"body": {"n": i}, "ttl": 300} for i in range(2)]},
    )
    assert resp.status_code == 201, resp.text
    yield name, dlq
    for q in (name, dlq):
        zaqar("DELETE", f"/v2/queues/{q}")


def test_zaqar_behind_keystone_is_in_the_catalog(controlplane, heat_session):
    zaqar = Api(heat_session, "messaging")
    assert zaqar.api.get_endpoint() == controlplane.messaging_url
    assert zaqar("GET", "/v2/queues").status_code == 200
    # Without a token Zaqar refuses; with the project's token it answered above.
    resp = requests.get(
        controlplane.messaging_url + "/v2/queues", headers={"Client-ID": str(uuid.uuid4())}, timeout=30
    )
    assert resp.status_code == 401


def test_consumer_credential_claims_and_deletes_and_nothing_else(heat_session, queues, app_credentials):
    name, dlq = queues
    consumer = app_credentials(consumer_rules(name, dlq))
    zaqar = Api(consumer, "messaging")
    claim = zaqar("POST", f"/v2/queues/{name}/claims", params={"limit": 1}, json={"ttl": 60, "grace": 60})
    assert claim.status_code == 201, claim.text
    message = claim.json()["messages"][0]
    claim_id = message["href"].split("claim_id=")[1]
    assert zaqar("PATCH", f"/v2/queues/{name}/claims/{claim_id}", json={"ttl": 120}).status_code == 204
    assert (
        zaqar(
            "DELETE", f"/v2/queues/{name}/messages/{message['id']}", params={"claim_id": claim_id}
        ).status_code
        == 204
    )
    assert zaqar("DELETE", f"/v2/queues/{name}/claims/{claim_id}").status_code == 204
    assert (
        zaqar(
            "POST", f"/v2/queues/{dlq}/messages", json={"messages": [{"body": "poison", "ttl": 300}]}
        ).status_code
        == 201
    )

    refused = {
        "delete its queue": zaqar("DELETE", f"/v2/queues/{name}"),
        "post to another queue": zaqar("POST", "/v2/queues/other/messages", json={"messages": [{"body": 1}]}),
        "list queues": zaqar("GET", "/v2/queues"),
        "read stats": zaqar("GET", f"/v2/queues/{name}/stats"),
        "bulk delete": zaqar("DELETE", f"/v2/queues/{name}/messages", params={"ids": message["id"]}),
        "Heat": Api(consumer, "orchestration")("GET", "/stacks"),
    }
    assert {what: r.status_code for what, r in refused.items()} == dict.fromkeys(refused, 401)
    # The refused delete really did nothing: the queue and its other message are still there.
    stats = Api(heat_session, "messaging")("GET", f"/v2/queues/{name}/stats").json()["messages"]
    assert stats["total"] == 1


def test_monitor_credential_reads_stats_and_scales_its_own_stack_only(
    heat_session, queues, stacks, app_credentials
):
    name, dlq = queues
    stack = stacks.create(min_size=1, max_size=3, desired_capacity=1)
    other = stacks.create(min_size=1, max_size=3, desired_capacity=1)
    monitor = app_credentials(monitor_rules(name, dlq, stack["stack_name"]))
    zaqar = Api(monitor, "messaging")
    assert zaqar("GET", f"/v2/queues/{name}/stats").json()["messages"]["free"] == 2

    # The Heat actuator works with nothing more than the monitor's rules: find, read, signal.
    actuator = HeatActuator(monitor, stack["stack_name"], mode="signal", settle_timeout=20)
    result = actuator.apply(2, "backlog")
    assert (result.before, result.after) == (1, 2)
    assert HeatActuator(monitor, stack["stack_name"], mode="patch").apply(3, "backlog").after == 3

    heat = Api(monitor, "orchestration")
    refused = {
        "claim": zaqar("POST", f"/v2/queues/{name}/claims", json={"ttl": 60, "grace": 60}),
        "another queue's stats": zaqar("GET", "/v2/queues/other/stats"),
        "delete its queue": zaqar("DELETE", f"/v2/queues/{name}"),
        "delete its stack": heat("DELETE", f"/stacks/{stack['stack_name']}/{stack['id']}"),
        "list stacks": heat("GET", "/stacks"),
        "signal another stack": heat(
            "POST", f"/stacks/{other['stack_name']}/{other['id']}/resources/scale_up/signal"
        ),
        "create a stack": heat("POST", "/stacks", json={"stack_name": "x", "template": {}}),
    }
    assert {what: r.status_code for what, r in refused.items()} == dict.fromkeys(refused, 401)
    assert stacks.output(other, "current_size") == 1
    assert stacks.output(stack, "current_size") == 3


def test_zaqar_driver_works_through_clouds_yaml(controlplane, monkeypatch):
    """The workload's own Zaqar driver, configured only by clouds.yaml (catalog endpoint, token)."""
    from workload.queues import open_queue

    for key, value in controlplane.env().items():
        monkeypatch.setenv(key, value)
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    queue = open_queue("zaqar", name, cloud="local")
    queue.ensure()
    try:
        queue.post([{"n": 1}, {"n": 2}], ttl=300)
        assert queue.stats().free == 2
        claim = queue.claim(limit=1, ttl=60, grace=60)
        assert claim is not None and len(claim.messages) == 1
        queue.delete(claim.messages[0], claim)
        assert queue.stats().total == 1
    finally:
        queue.drop()

"""The credentials' access rules, enforced by a real Keystone in front of a real Zaqar.

The session's control plane (``controlplane`` in tests/conftest.py: devenv.controlplane with
``messaging=True``): a real Keystone and a real Zaqar 23 in its catalog whose API checks every
token with keystonemiddleware (``auth_strategy = keystone``, ``service_type = messaging``). The
queue pair is made by the stack's own dynamic provider with the owner's cloud credentials
(clouds.yaml); then application credentials carrying exactly the rules the program declares are
used: each may do its job and nothing else (Keystone's refusal is a 401). Other tests share this
Zaqar, so the queues here have unique names and only they are checked.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import requests

from infra import access_rules
from infra.zaqar_provider import QueuePairProvider
from workload.queues.base import QueuePolicy

pytestmark = pytest.mark.controlplane


def _token(controlplane, identity: dict, scope: dict | None = None) -> str:
    auth = {"identity": identity, **({"scope": scope} if scope else {})}
    r = requests.post(f"{controlplane.url}/auth/tokens", json={"auth": auth}, timeout=30)
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


def _owner(controlplane):
    from devenv import keystone

    return {
        "methods": ["password"],
        "password": {
            "user": {
                "name": keystone.DEMO_USER,
                "domain": {"name": "Default"},
                "password": controlplane.secrets["demo"],
            }
        },
    }


def _project() -> dict:
    from devenv import keystone

    return {"project": {"name": keystone.DEMO_PROJECT, "domain": {"name": "Default"}}}


def _credential_token(controlplane, owner_token: str, rules: list) -> str:
    user = requests.get(
        f"{controlplane.url}/auth/tokens",
        headers={"X-Auth-Token": owner_token, "X-Subject-Token": owner_token},
        timeout=30,
    ).json()["token"]["user"]["id"]
    r = requests.post(
        f"{controlplane.url}/users/{user}/application_credentials",
        headers={"X-Auth-Token": owner_token},
        json={"application_credential": {"name": f"qw-test-{uuid.uuid4().hex[:8]}", "access_rules": rules}},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    cred = r.json()["application_credential"]
    return _token(
        controlplane,
        {
            "methods": ["application_credential"],
            "application_credential": {"id": cred["id"], "secret": cred["secret"]},
        },
    )


def _all_queue_names(client: Client) -> set[str]:
    """Every queue the token's project has, page by page (Zaqar gives at most 20 a page)."""
    names: set[str] = set()
    params = {"limit": 20}
    while True:
        r = client("GET", "/v2/queues", params=params)
        assert r.status_code in (200, 204), r.text
        page = [q["name"] for q in (r.json().get("queues", []) if r.status_code == 200 else [])]
        if not page:
            return names
        names.update(page)
        params = {"limit": 20, "marker": page[-1]}


class Client:
    """Raw Zaqar v2 calls with one token (no retry on 401, unlike keystoneauth)."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.s = requests.Session()
        self.s.headers.update({"X-Auth-Token": token, "Client-ID": str(uuid.uuid4())})

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        return self.s.request(method, self.url + path, timeout=30, **kw)


@pytest.fixture(scope="module")
def pair(controlplane):
    """The queue pair, made and finally dropped by the stack's provider with the owner's cloud."""
    import os

    name = f"qwrules-{uuid.uuid4().hex[:8]}"
    props = {
        "backend": "zaqar",
        "name": name,
        "cloud": "local",
        "region": "",
        "url": controlplane.messaging_url,
        "project": "",
        "policy": dataclasses.asdict(QueuePolicy(max_claims=3)),
    }
    old = os.environ.get("OS_CLIENT_CONFIG_FILE")
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(controlplane.clouds_yaml)
    prov = QueuePairProvider()
    try:
        outs = prov.create(props).outs
        owner = _token(controlplane, _owner(controlplane), _project())
        yield name, outs, owner
        both = {name, outs["dead_letter_queue"]}
        assert both <= _all_queue_names(Client(controlplane.messaging_url, owner))  # still there
        prov.delete(name, outs)
        assert not both & _all_queue_names(Client(controlplane.messaging_url, owner))  # both gone
    finally:
        if old is None:
            os.environ.pop("OS_CLIENT_CONFIG_FILE", None)
        else:
            os.environ["OS_CLIENT_CONFIG_FILE"] = old


def test_owner_made_both_queues_with_their_policy(controlplane, pair):
    name, outs, owner = pair
    z = Client(controlplane.messaging_url, owner)
    assert z("GET", "/v2/queues/x/stats").status_code != 401  # the owner is not restricted
    meta = z("GET", f"/v2/queues/{name}").json()
    assert meta["_max_claim_count"] == 3 and meta["_dead_letter_queue"] == outs["dead_letter_queue"]


def test_consumer_may_work_its_two_queues_and_nothing_else(controlplane, pair):
    name, outs, owner = pair
    dlq = outs["dead_letter_queue"]
    z = Client(
        controlplane.messaging_url,
        _credential_token(controlplane, owner, access_rules.consumer_rules(name, dlq)),
    )
    # its job
    assert (
        z("POST", f"/v2/queues/{name}/messages", json={"messages": [{"body": 1}, {"body": 2}]}).status_code
        == 201
    )
    r = z("POST", f"/v2/queues/{name}/claims", json={"ttl": 60, "grace": 60}, params={"limit": 2})
    assert r.status_code == 201, r.text
    claim_id = r.headers["Location"].rstrip("/").split("/")[-1].split("?")[0]
    msgs = r.json()["messages"]
    assert z("PATCH", f"/v2/queues/{name}/claims/{claim_id}", json={"ttl": 120}).status_code == 204  # renew
    first = msgs[0]["href"].split("?")[0].split("/")[-1]
    assert (
        z("DELETE", f"/v2/queues/{name}/messages/{first}", params={"claim_id": claim_id}).status_code == 204
    )
    assert z("DELETE", f"/v2/queues/{name}/claims/{claim_id}").status_code == 204  # release the rest
    assert z("POST", f"/v2/queues/{dlq}/messages", json={"messages": [{"body": "dead"}]}).status_code == 201
    # nothing else: Keystone refuses with 401
    other = f"qwrules-other-{uuid.uuid4().hex[:6]}"
    refused = [
        z("DELETE", f"/v2/queues/{name}"),  # delete its queue
        z("DELETE", f"/v2/queues/{dlq}"),
        z("POST", f"/v2/queues/{other}/messages", json={"messages": [{"body": 1}]}),  # another queue
        z("GET", "/v2/queues"),  # list the project's queues
        z("DELETE", f"/v2/queues/{name}/messages", params={"ids": first}),  # bulk delete
        z("PUT", f"/v2/queues/{name}", json={}),  # change the policy
        z("POST", f"/v2/queues/{name}/purge", json={}),
    ]
    assert [r.status_code for r in refused] == [401] * len(refused)


def test_monitor_may_only_read_the_two_queues_stats(controlplane, pair):
    name, outs, owner = pair
    dlq = outs["dead_letter_queue"]
    rules = access_rules.monitor_rules(name, dlq, "queue-workers-test")
    z = Client(controlplane.messaging_url, _credential_token(controlplane, owner, rules))
    for q in (name, dlq):
        r = z("GET", f"/v2/queues/{q}/stats")
        assert r.status_code == 200 and "messages" in r.json(), r.text
    refused = [
        z("POST", f"/v2/queues/{name}/messages", json={"messages": [{"body": 1}]}),
        z("POST", f"/v2/queues/{name}/claims", json={"ttl": 60, "grace": 60}),
        z("DELETE", f"/v2/queues/{name}"),
        z("GET", f"/v2/queues/{name}/messages"),
    ]
    assert [r.status_code for r in refused] == [401] * len(refused)

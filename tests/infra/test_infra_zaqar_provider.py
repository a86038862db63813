"""The WorkQueue's dynamic provider against the real local Zaqar (fixture ``zaqar``).

Pulumi's mocks never call a dynamic provider, so its check/create/diff/update/delete are called
here directly, as the engine would, and the queues are read back over Zaqar's own HTTP API.
"""

from __future__ import annotations

import base64
import dataclasses
import uuid

import dill
import pytest
import requests
from pulumi.dynamic.dynamic import serialize_provider

from infra.zaqar_provider import QueuePairProvider
from workload.queues.base import QueuePolicy


def _http(zaqar):
    s = requests.Session()
    s.headers.update({"Client-ID": str(uuid.uuid4()), "X-Project-ID": zaqar.project})
    return s


def queue_names(zaqar) -> set[str]:
    """Every queue of the project, as Zaqar lists them (20 a page)."""
    s, names, marker = _http(zaqar), set(), None
    while True:
        r = s.get(f"{zaqar.url}/v2/queues", params={"limit": 20, **({"marker": marker} if marker else {})})
        assert r.status_code in (200, 204), r.text
        page = r.json().get("queues", []) if r.status_code == 200 else []
        if not page:
            return names
        names |= {q["name"] for q in page}
        marker = page[-1]["name"]


def metadata(zaqar, name: str) -> dict:
    r = _http(zaqar).get(f"{zaqar.url}/v2/queues/{name}")
    assert r.status_code == 200, r.text
    return r.json()


def props(zaqar, name: str, **policy) -> dict:
    p = dataclasses.asdict(QueuePolicy(**policy))
    return {
        "backend": "zaqar",
        "name": name,
        "cloud": "",
        "region": "",
        "url": zaqar.url,
        "project": zaqar.project,
        "policy": p,
    }


@pytest.fixture
def name():
    return f"qwinfra-{uuid.uuid4().hex[:10]}"


def test_check_reports_bad_inputs_by_property(zaqar, name):
    prov = QueuePairProvider()
    ok = prov.check({}, props(zaqar, name))
    assert ok.failures == []
    bad = props(zaqar, "", claim_ttl=30)
    bad.update(url="", cloud="")
    failures = {f.property: f.reason for f in prov.check({}, bad).failures}
    assert set(failures) == {"name", "cloud", "policy"}
    assert "claim_ttl" in failures["policy"] and "60" in failures["policy"]


def test_create_update_delete_both_queues(zaqar, name):
    prov = QueuePairProvider()
    p = props(zaqar, name, message_ttl=3600, max_claims=3)
    created = prov.create(p)
    assert created.id == name and created.outs["dead_letter_queue"] == f"{name}-dlq"
    assert {name, f"{name}-dlq"} <= queue_names(zaqar)
    meta = metadata(zaqar, name)
    assert meta.get("_max_claim_count") == 3 and meta.get("_dead_letter_queue") == f"{name}-dlq"
    assert meta.get("_default_message_ttl") == 3600

    # a message posted now must survive the in-place update
    s = _http(zaqar)
    r = s.post(f"{zaqar.url}/v2/queues/{name}/messages", json={"messages": [{"body": {"n": 1}, "ttl": 600}]})
    assert r.status_code == 201, r.text

    new = props(zaqar, name, message_ttl=7200, max_claims=5)
    diff = prov.diff(name, created.outs, new)
    assert diff.changes is True and diff.replaces == []  # metadata changes in place
    updated = prov.update(name, created.outs, new)
    meta = metadata(zaqar, name)
    assert meta.get("_max_claim_count") == 5 and meta.get("_default_message_ttl") == 7200
    assert updated.outs["policy"]["max_claims"] == 5
    r = s.get(f"{zaqar.url}/v2/queues/{name}/messages", params={"echo": "true"})
    assert r.status_code == 200 and [m["body"] for m in r.json()["messages"]] == [{"n": 1}]

    prov.delete(name, updated.outs)
    assert not {name, f"{name}-dlq"} & queue_names(zaqar)
    prov.delete(name, updated.outs)  # deleting what is already gone is not an error


def test_diff(zaqar, name):
    prov = QueuePairProvider()
    base = props(zaqar, name)
    outs = prov.create(base).outs
    try:
        assert prov.diff(name, outs, base).changes is False
        renamed = prov.diff(name, outs, props(zaqar, name + "x"))
        assert renamed.changes and renamed.replaces == ["name"] and renamed.delete_before_replace is True
        moved = prov.diff(name, outs, {**base, "region": "DFW"})
        assert moved.replaces == ["region"]
        assert prov.diff(name, outs, props(zaqar, name, claim_grace=120)).replaces == []
    finally:
        prov.delete(name, outs)


def test_provider_pickles_by_reference():
    """The engine unpickles the provider in its own process: it must name this module, not embed it."""
    blob = base64.b64decode(serialize_provider(QueuePairProvider()))  # exactly what Pulumi stores
    assert b"infra.zaqar_provider" in blob and len(blob) < 2000, len(blob)
    assert isinstance(dill.loads(blob), QueuePairProvider)

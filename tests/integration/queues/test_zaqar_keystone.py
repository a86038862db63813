"""The Zaqar driver's cloud path: credentials from clouds.yaml, a keystoneauth session, the
messaging endpoint from the catalog, against a real Keystone and a Zaqar with Keystone auth."""

from __future__ import annotations

import json
import uuid

import pytest

from workload.queues import QueueError, QueuePolicy, open_queue, retry

pytestmark = pytest.mark.controlplane


@pytest.fixture
def clouds_env(controlplane, monkeypatch):
    """The session control plane (Keystone + Heat + Zaqar with Keystone auth in its catalog),
    reached the OpenStack way: OS_CLIENT_CONFIG_FILE + OS_CLOUD and nothing else."""
    cp = controlplane
    for key in [k for k in __import__("os").environ if k.startswith("OS_")]:
        monkeypatch.delenv(key)
    for key, value in cp.env().items():
        monkeypatch.setenv(key, value)
    return cp


def test_a_queue_through_keystone_and_the_catalog(clouds_env):
    q = open_queue("zaqar", f"ks-{uuid.uuid4().hex[:10]}", cloud="local")  # OS_CLOUD's clouds.yaml
    try:
        q.ensure(QueuePolicy(max_claims=3))
        assert q.metadata()["_max_claim_count"] == 3
        q.post([{"via": "keystone"}])
        c = q.claim(limit=5, ttl=60, grace=60)
        assert [m.body for m in c.messages] == [{"via": "keystone"}]
        q.delete(c.messages[0], c)
        assert q.stats().total == 0
        # The request reached Zaqar with a token, not with a project header: without one it says no.
        import requests

        r = requests.get(
            f"{clouds_env.messaging_url}/v2/queues/{q.name}/stats",
            headers={"Client-ID": str(uuid.uuid4()), "X-Project-ID": "demo"},
        )
        assert r.status_code == 401
    finally:
        q.drop()


def test_bad_credentials_surface_keystone_refusal(clouds_env, tmp_path, monkeypatch):
    cp = clouds_env
    clouds = json.loads(cp.clouds_yaml.read_text())
    clouds["clouds"]["local"]["auth"]["password"] = "wrong-" + uuid.uuid4().hex
    bad = tmp_path / "clouds.yaml"
    bad.write_text(json.dumps(clouds))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(bad))
    q = open_queue("zaqar", "ks-any", cloud="local", retry_policy=retry.NO_RETRY)
    with pytest.raises(QueueError) as err:
        q.stats()
    assert err.value.status == 401
    assert clouds["clouds"]["local"]["auth"]["password"] not in str(err.value)

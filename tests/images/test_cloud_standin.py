"""The cloud stand-in answers as the API references say (no root needed: servers are fakes here).

The bake tests (marker builder) run the whole bake against it with real builder hosts; these
check the request/response shapes openstacksdk and raw clients rely on.
"""

from __future__ import annotations

import time

import openstack
import pytest
import requests

from devenv.cloud_standin import CloudStandin
from images.ssh import host_keys_from_console


class FakeHost:
    """Stands for a builder host: a console log with one host key, nothing to connect to."""

    def __init__(self, public_key, port):
        self.public_key, self.port, self.stopped = public_key, port, False

    def start(self):
        return self

    def stop(self):
        self.stopped = True

    def console_log(self):
        return (
            "cloud-init: booting\n-----BEGIN SSH HOST KEY KEYS-----\n"
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly00000000000000000000 root@b\n"
            "-----END SSH HOST KEY KEYS-----\n"
        )


@pytest.fixture()
def cloud():
    with CloudStandin(FakeHost, boot_seconds=0.05, snapshot_seconds=0.2) as c:
        c.conn = openstack.connect(**c.cloud_config()["auth"], region_name="RegionOne")
        yield c


def _token(cloud):
    r = requests.post(
        f"{cloud.auth_url}/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": "baker", "password": "secret", "domain": {"name": "Default"}}
                    },
                }
            }
        },
    )
    assert r.status_code == 201
    return r.headers["X-Subject-Token"], r.json()["token"]


def test_keystone_token_catalog_and_401s(cloud):
    tok, body = _token(cloud)
    assert {s["type"] for s in body["catalog"]} >= {"identity", "compute", "image", "network"}
    bad = requests.post(
        f"{cloud.auth_url}/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "baker", "password": "wrong"}},
                }
            }
        },
    )
    assert bad.status_code == 401
    assert requests.get(f"{cloud.url}/compute/v2.1/servers").status_code == 401
    assert requests.get(f"{cloud.url}/compute/v2.1/servers", headers={"X-Auth-Token": tok}).status_code == 200


def test_nova_microversions_shape_keypair_and_create_image_answers(cloud):
    tok, _ = _token(cloud)
    h = {"X-Auth-Token": tok}
    base = f"{cloud.url}/compute/v2.1"
    # 2.1: key pair create answers 200 and delete 202; 2.2+: 201 and 204.
    r = requests.post(
        f"{base}/os-keypairs", headers=h, json={"keypair": {"name": "a", "public_key": "ssh-ed25519 AAAA"}}
    )
    assert r.status_code == 200 and r.headers["OpenStack-API-Version"] == "compute 2.1"
    h22 = {**h, "OpenStack-API-Version": "compute 2.2"}
    r = requests.post(
        f"{base}/os-keypairs", headers=h22, json={"keypair": {"name": "b", "public_key": "ssh-ed25519 AAAA"}}
    )
    assert r.status_code == 201
    assert (
        requests.post(
            f"{base}/os-keypairs", headers=h22, json={"keypair": {"name": "b", "public_key": "x"}}
        ).status_code
        == 409
    )
    assert requests.delete(f"{base}/os-keypairs/a", headers=h).status_code == 202
    assert requests.delete(f"{base}/os-keypairs/b", headers=h22).status_code == 204
    assert (
        requests.get(base + "/servers", headers={**h, "OpenStack-API-Version": "compute 2.200"}).status_code
        == 406
    )

    srv = requests.post(
        f"{base}/servers",
        headers=h,
        json={"server": {"name": "s", "imageRef": cloud.state.base_image_id, "flavorRef": "1"}},
    )
    assert srv.status_code == 202 and srv.headers["Location"].endswith(srv.json()["server"]["id"])
    sid = srv.json()["server"]["id"]
    for _ in range(50):
        if requests.get(f"{base}/servers/{sid}", headers=h).json()["server"]["status"] == "ACTIVE":
            break
        time.sleep(0.05)
    out = requests.post(
        f"{base}/servers/{sid}/action", headers=h, json={"os-getConsoleOutput": {"length": 50}}
    )
    assert host_keys_from_console(out.json()["output"])[0][0] == "ssh-ed25519"
    # createImage: before 2.45 the image is in the Location header, from 2.45 in the body.
    old = requests.post(f"{base}/servers/{sid}/action", headers=h, json={"createImage": {"name": "i1"}})
    assert old.status_code == 202 and "/v2/images/" in old.headers["Location"] and not old.content
    new = requests.post(
        f"{base}/servers/{sid}/action",
        headers={**h, "OpenStack-API-Version": "compute 2.45"},
        json={"createImage": {"name": "i2", "metadata": {"k": "v"}}},
    )
    img = requests.get(f"{cloud.url}/image/v2/images/{new.json()['image_id']}", headers=h).json()
    assert img["k"] == "v" and img["image_type"] == "snapshot" and img["instance_uuid"] == sid
    assert requests.delete(f"{base}/servers/{sid}", headers=h).status_code == 204
    assert requests.get(f"{base}/servers/{sid}", headers=h).status_code == 404


def test_neutron_security_group_in_use_and_floating_ip_follow_the_port(cloud):
    conn = cloud.conn
    sg = conn.network.create_security_group(name="g")
    srv = conn.compute.create_server(
        name="s", image_id=cloud.state.base_image_id, flavor_id="1", security_groups=[{"name": "g"}]
    )
    srv = conn.compute.wait_for_server(srv, wait=10, interval=0.05)
    with pytest.raises(openstack.exceptions.ConflictException):
        conn.network.delete_security_group(sg)  # 409 SecurityGroupInUse while a port uses it
    port = next(iter(conn.network.ports(device_id=srv.id)))
    ext = conn.network.find_network("public")
    fip = conn.network.create_ip(floating_network_id=ext.id, port_id=port.id)
    assert fip.port_id == port.id and fip.fixed_ip_address == "127.0.0.1"
    addrs = conn.compute.get_server(srv.id).addresses["private"]
    assert {a["OS-EXT-IPS:type"] for a in addrs} == {"fixed", "floating"}
    conn.compute.delete_server(srv)
    assert conn.network.get_ip(fip.id).port_id is None  # the port went with the server
    conn.network.delete_security_group(sg)
    conn.network.delete_ip(fip)
    assert cloud.state.leftovers() == {
        "servers": [],
        "keypairs": [],
        "security_groups": [],
        "floating_ips": [],
        "ports": [],
    }


def test_glance_json_patch_is_the_only_accepted_update_and_keeps_other_properties(cloud):
    conn = cloud.conn
    img = cloud.state.new_image("t", status="active", properties={"a": "1", "b": "2"})
    r = conn.image.patch(
        f"/images/{img['id']}",
        json=[{"op": "add", "path": "/c", "value": "3"}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    assert r.status_code == 200 and {k: r.json()[k] for k in "abc"} == {"a": "1", "b": "2", "c": "3"}
    r = conn.image.patch(
        f"/images/{img['id']}",
        json=[{"op": "add", "path": "/c", "value": "3"}],
        headers={"Content-Type": "application/json"},
        raise_exc=False,
    )
    assert r.status_code == 415
    r = conn.image.patch(
        f"/images/{img['id']}",
        json=[{"op": "replace", "path": "/status", "value": "active"}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
        raise_exc=False,
    )
    assert r.status_code == 403

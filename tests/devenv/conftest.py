"""Fixtures for the machines tests: the cloud image, a key pair, a config drive made as Nova makes one."""

from __future__ import annotations

import ipaddress
import json
import uuid
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cloud_image():
    """The base image debian-12 (rootfs tar), built once per recipe (one to five minutes when new)."""
    from devenv.builder import rootfs
    from devenv.builder.host import missing_prerequisite

    reason = missing_prerequisite(("mmdebstrap", "systemd-nspawn", "socat"))
    if reason:
        pytest.skip(reason=reason)
    return rootfs.cloud_image()


@pytest.fixture(scope="session")
def user_key(tmp_path_factory):
    """The key pair a user uploads to Nova: (private key path, public key line), made as the bake makes its own."""
    from images.bake import make_key

    return make_key(tmp_path_factory.mktemp("user-key"))


def write_config_drive(folder: Path, *, name: str, public_key: str, user_data: str, nic) -> str:
    """What Nova's InstanceMetadata.metadata_for_config_drive() puts on a config drive (the
    files cloud-init reads), for one port; returns the instance uuid."""
    instance = str(uuid.uuid4())
    latest = folder / "openstack" / "latest"
    latest.mkdir(parents=True)
    net = ipaddress.ip_interface(f"{nic.address}/{nic.prefixlen}")
    meta = {
        "uuid": instance,
        "name": name,
        "hostname": name,
        "launch_index": 0,
        "availability_zone": "nova",
        "project_id": "p" * 32,
        "devices": [],
        "public_keys": {"test-key": public_key + "\n"},
        "keys": [{"name": "test-key", "type": "ssh", "data": public_key + "\n"}],
        "meta": {},
    }
    port = str(uuid.uuid4())
    network_data = {
        "links": [
            {
                "id": f"tap{port[:11]}",
                "vif_id": port,
                "type": "tap",
                "mtu": 1500,
                "ethernet_mac_address": nic.mac,
            }
        ],
        "networks": [
            {
                "id": "network0",
                "type": "ipv4",
                "link": f"tap{port[:11]}",
                "ip_address": nic.address,
                "netmask": str(net.netmask),
                "network_id": str(uuid.uuid4()),
                "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": nic.gateway}],
                "services": [],
            }
        ],
        "services": [],
    }
    (latest / "meta_data.json").write_text(json.dumps(meta))
    (latest / "network_data.json").write_text(json.dumps(network_data))
    (latest / "vendor_data.json").write_text("{}")
    (latest / "user_data").write_text(user_data)
    return instance

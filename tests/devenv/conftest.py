"""Fixtures for the machines tests: the cloud image, a key pair, a config drive made as Nova makes one."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest


def _prereqs() -> str | None:
    if os.geteuid() != 0:
        return "machines need root (network namespaces, overlay mounts, systemd-nspawn)"
    for tool in ("mmdebstrap", "systemd-nspawn", "socat"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: run `make builder-deps` (devenv/builder/install-deps.sh)"
    return None


@pytest.fixture(scope="session")
def cloud_image():
    """The base image debian-12 (rootfs tar), built once per recipe (about a minute when new)."""
    reason = _prereqs()
    if reason:
        pytest.skip(reason=reason)
    from devenv.builder import rootfs

    return rootfs.cloud_image()


@pytest.fixture(scope="session")
def user_key(tmp_path_factory):
    """The key pair a user uploads to Nova: (private key path, public key line)."""
    d = tmp_path_factory.mktemp("user-key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qw-machines-test", "-f", str(d / "id")],
                   check=True)
    return str(d / "id"), (d / "id.pub").read_text().strip()


def write_config_drive(folder: Path, *, name: str, public_key: str, user_data: str, nic) -> str:
    """What Nova's InstanceMetadata.metadata_for_config_drive() puts on a config drive (the
    files cloud-init reads), for one port; returns the instance uuid."""
    instance = str(uuid.uuid4())
    latest = folder / "openstack" / "latest"
    latest.mkdir(parents=True)
    net = __import__("ipaddress").ip_interface(f"{nic.address}/{nic.prefixlen}")
    meta = {"uuid": instance, "name": name, "hostname": name, "launch_index": 0,
            "availability_zone": "nova", "project_id": "p" * 32, "devices": [],
            "public_keys": {"test-key": public_key + "\n"}, "keys": [
                {"name": "test-key", "type": "ssh", "data": public_key + "\n"}], "meta": {}}
    port = str(uuid.uuid4())
    network_data = {
        "links": [{"id": f"tap{port[:11]}", "vif_id": port, "type": "tap", "mtu": 1500,
                   "ethernet_mac_address": nic.mac}],
        "networks": [{"id": "network0", "type": "ipv4", "link": f"tap{port[:11]}", "ip_address": nic.address,
                      "netmask": str(net.netmask), "network_id": str(uuid.uuid4()),
                      "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": nic.gateway}],
                      "services": []}],
        "services": []}
    (latest / "meta_data.json").write_text(json.dumps(meta))
    (latest / "network_data.json").write_text(json.dumps(network_data))
    (latest / "vendor_data.json").write_text("{}")
    (latest / "user_data").write_text(user_data)
    return instance

"""A member user's server on the local cloud, from key pair to image, as on any OpenStack.

Real Nova, Glance and Neutron (devenv.cloud); the server is a systemd-nspawn machine booted from
the ``debian-12`` rootfs by devenv's compute driver, and real cloud-init in it reads Nova's config
drive. One test walks the life of one server (each step needs the one before):
key pair, security group and rule, boot on the provider network with user data, ACTIVE, the
console with cloud-init's host key block and the user data's own line, SSH as ``debian`` with the
console's host key pinned, a floating IP associated and released, stop (SHUTOFF), an image of it (active, with data), delete everything,
nothing left in Nova, Neutron or Glance.
"""

from __future__ import annotations

import base64
import re
import time

import pytest

from devenv import cloud as local_cloud
from devenv.procs import wait_until

pytestmark = pytest.mark.cloud

HOST_KEYS_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
HOST_KEYS_END = "-----END SSH HOST KEY KEYS-----"


def user_data(marker: str) -> str:
    """cloud-config whose runcmd prints ``marker`` on the console (proof the user data ran)."""
    return (
        "#cloud-config\n"
        "write_files:\n"
        "  - path: /etc/queue-workers/test.env\n"
        "    permissions: '0600'\n"
        f"    content: QW_MARKER={marker}\n"
        "runcmd:\n"
        f"  - [sh, -c, 'echo {marker} $(cat /etc/queue-workers/test.env) > /dev/console']\n"
    )


def host_keys(console: str) -> list[str]:
    """The ``type base64`` host keys cloud-init printed between the markers."""
    block = console.split(HOST_KEYS_BEGIN, 1)[1].split(HOST_KEYS_END, 1)[0]
    return [" ".join(line.split()[:2]) for line in block.splitlines() if line.strip().startswith("ssh-")]


def test_member_server_life(member, admin, make_keypair, unique):
    keypair = make_keypair()
    if local_cloud.compute_driver() != local_cloud.MACHINE_DRIVER:
        pytest.fail(
            f"Nova runs {local_cloud.compute_driver()}: servers would not boot "
            "(devenv/machines.py is missing or QW_COMPUTE_DRIVER overrides it)"
        )
    image = member.image.find_image(local_cloud.BASE_IMAGE)
    assert image is not None and image.os_distro == "debian"
    network = member.network.find_network(local_cloud.PROVIDER_NETWORK)
    flavor = member.compute.find_flavor("m1.small")

    group = member.network.create_security_group(name=unique("sg"), description="ssh in")
    member.network.create_security_group_rule(
        security_group_id=group.id,
        direction="ingress",
        protocol="tcp",
        port_range_min=22,
        port_range_max=22,
        remote_ip_prefix="0.0.0.0/0",
        ethertype="IPv4",
    )
    marker = unique("ran")
    server = member.compute.create_server(
        name=unique("server"),
        image_id=image.id,
        flavor_id=flavor.id,
        networks=[{"uuid": network.id}],
        key_name=keypair.name,
        security_groups=[{"name": group.name}],
        metadata={"role": "test"},
        user_data=base64.b64encode(user_data(marker).encode()).decode(),
    )
    snapshot = None
    try:
        server = member.compute.wait_for_server(server, status="ACTIVE", wait=240)
        address = server.addresses[local_cloud.PROVIDER_NETWORK][0]["addr"]
        port = next(member.network.ports(device_id=server.id))
        assert [g for g in port.security_group_ids] == [group.id]

        # Real cloud-init: the host key block (keys_to_console) and the user data's own line.
        console = wait_until(
            lambda: (
                (out := member.compute.get_server_console_output(server)["output"])
                and HOST_KEYS_END in out
                and marker in out
                and out
            ),
            240,
            "cloud-init on the console",
        )
        assert f"{marker} QW_MARKER={marker}" in console
        keys = host_keys(console)
        assert any(k.startswith("ssh-ed25519 ") for k in keys), keys

        # SSH to the fixed IP as the image's default user, host key pinned from the console.
        _ssh_check(address, keypair.private, keys, marker)

        # A floating IP from the external network, associated with the server's port through
        # the router (no L3 agent: devenv.floating_ips routes it on this host; its status stays DOWN).
        external = member.network.find_network(local_cloud.EXTERNAL_NETWORK)
        floating = member.network.create_ip(floating_network_id=external.id, port_id=port.id)
        try:
            assert floating.fixed_ip_address == address
            assert floating.floating_ip_address.startswith(local_cloud.EXTERNAL_CIDR.rsplit(".", 1)[0])
        finally:
            member.network.delete_ip(floating)

        member.compute.stop_server(server)
        server = member.compute.wait_for_server(server, status="SHUTOFF", wait=180)
        assert server.power_state == 4  # Nova's SHUTDOWN, read from the machine by the driver

        snapshot_id = member.compute.create_server_image(server, name=unique("image"))
        snapshot = member.image.wait_for_status(
            member.image.get_image(snapshot_id), status="active", wait=600, interval=2
        )
        assert snapshot.size and snapshot.size > 10 << 20, snapshot.size
        assert snapshot.disk_format == "raw" and snapshot.container_format == "bare"
    finally:
        member.compute.delete_server(server, ignore_missing=True)
        member.compute.wait_for_delete(server, wait=180)
        if snapshot is not None:
            member.image.delete_image(snapshot, ignore_missing=True)
        member.network.delete_security_group(group, ignore_missing=True)

    # Nothing left: no server, no port of it, no image, no group.
    assert member.compute.find_server(server.id, ignore_missing=True) is None
    assert list(admin.network.ports(device_id=server.id)) == []
    assert member.image.find_image(snapshot.id if snapshot else "none", ignore_missing=True) is None
    assert member.network.find_security_group(group.id, ignore_missing=True) is None


def _ssh_check(address: str, private_key, host_keys: list[str], marker: str) -> None:
    """SSH as ``debian`` with only the console's host keys trusted; the env file is there."""
    import paramiko

    client = paramiko.SSHClient()
    for key in host_keys:
        kind, data = key.split()
        client.get_host_keys().add(
            address, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(data))
        )
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    deadline = time.monotonic() + 120
    while True:
        try:
            client.connect(
                address,
                username="debian",
                pkey=private_key,
                timeout=10,
                allow_agent=False,
                look_for_keys=False,
            )
            break
        except (OSError, paramiko.SSHException):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    try:
        _, out, _ = client.exec_command("sudo cat /etc/queue-workers/test.env; id -un", timeout=30)
        text = out.read().decode()
    finally:
        client.close()
    assert re.search(rf"QW_MARKER={marker}\s*debian", text), text

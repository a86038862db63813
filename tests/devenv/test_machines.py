"""Servers of the local cloud (devenv.machines): the real debian-12 cloud image booted with
systemd-nspawn, Nova's config drive read by real cloud-init, SSH at the port's fixed IP with the
host key pinned from the machine's real console, clean shutdown, snapshot, hard power-off and a
destroy that leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from images.ssh import host_keys_from_console, pinned_connection
from tests.devenv.conftest import write_config_drive

pytestmark = pytest.mark.builder

SUBNET = "10.249.17"
USER_DATA = """#cloud-config
write_files:
  - path: /etc/queue-workers/x.env
    permissions: "0600"
    owner: root:root
    content: |
      QW_QUEUE={queue}
runcmd:
  - [sh, -c, "echo {marker} > /run/qw-runcmd"]
"""


# TCP connect to ADDRESS:22 from inside a machine: exit 0 if it answers within 3 s.
_CONNECT = "python3 -c 'import socket; socket.create_connection((\"{address}\", 22), timeout=3)'"


def _nic(host: int):
    from devenv.machines import Nic

    return Nic(f"fa:16:3e:00:11:{host:02x}", f"{SUBNET}.{host}", 24, f"{SUBNET}.1")


def _boot(machine, image, nic, key, tmp_path, queue: str, marker: str):
    """Create and start ``machine`` with a config drive as Nova writes it; wait for SSH as debian.
    Returns (instance uuid, pinned host keys, seconds from start() to SSH)."""
    drive = tmp_path / f"drive-{machine.name}"
    instance = write_config_drive(
        drive,
        name=machine.name,
        public_key=key[1],
        user_data=USER_DATA.format(queue=queue, marker=marker),
        nic=nic,
    )
    machine.create(image, [nic], drive, [])
    t0 = time.monotonic()
    machine.start()
    deadline = time.monotonic() + 120
    keys = None
    while time.monotonic() < deadline:
        console = machine.console_output()
        if "-----END SSH HOST KEY KEYS-----" in console:
            keys = host_keys_from_console(console)
            try:
                with pinned_connection(nic.address, 22, "debian", key[0], keys, connect_timeout=3) as c:
                    c.run("true", hide=True)
                break
            except Exception:
                pass
        assert machine.running(), console[-3000:]
        time.sleep(0.2)
    else:
        pytest.fail(
            f"{machine.name}: no SSH with the console's host keys:\n{machine.console_output()[-3000:]}"
        )
    elapsed = time.monotonic() - t0
    print(f"\n{machine.name}: start() to SSH as debian (host key pinned): {elapsed:.1f} s")
    return instance, keys, elapsed


def _leftovers(machine) -> list[str]:
    """Everything of ``machine`` still on this host: namespace, veths, mounts, processes, files."""
    found = []
    if machine.name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split():
        found.append(f"netns {machine.name}")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [
        f"link {line.split(':')[1].strip()}" for line in links.splitlines() if f" {machine.name}-" in line
    ]
    found += [
        f"mount {line}"
        for line in Path("/proc/mounts").read_text().splitlines()
        if str(machine.run_dir) in line
    ]
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = p.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(machine.run_dir) in cmd or str(machine.sockets) in cmd:
            found.append(f"process {p.parent.name}: {cmd[:120]}")
    if machine.run_dir.exists():
        found.append(f"folder {machine.run_dir}")
    rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    found += [f"rule {line}" for line in rules.splitlines() if f" {machine.name}-" in line]
    return found


@pytest.fixture(scope="module")
def first(cloud_image, user_key, tmp_path_factory):
    """Machine A of debian-12, booted from a config drive and reachable over SSH."""
    from devenv.machines import Machine

    tmp = tmp_path_factory.mktemp("machines")
    m = Machine(f"qwt-{os.urandom(3).hex()}", tmp / "a")
    nic = _nic(10)
    try:
        instance, keys, _ = _boot(m, cloud_image, nic, user_key, tmp, "jobs-a", "first")
        yield m, nic, instance, keys, tmp
    finally:
        m.destroy()
        assert _leftovers(m) == []


def test_cloud_init_runs_nova_user_data_from_the_config_drive(first, user_key):
    m, nic, instance, keys, _ = first
    with pinned_connection(nic.address, 22, "debian", user_key[0], keys) as c:
        assert c.sudo("stat -c '%a %U:%G' /etc/queue-workers/x.env", hide=True).stdout.split() == [
            "600",
            "root:root",
        ]
        assert c.sudo("cat /etc/queue-workers/x.env", hide=True).stdout == "QW_QUEUE=jobs-a\n"
        assert c.run("cat /run/qw-runcmd", hide=True).stdout.strip() == "first"
        assert c.run("cat /var/lib/cloud/data/instance-id", hide=True).stdout.strip() == instance
        assert c.run("hostname", hide=True).stdout.strip() == m.name
        status = c.run("cloud-init status --long", warn=True, hide=True).stdout
        assert "status: done" in status and "DataSourceConfigDrive" in status, status
        # The port's MAC and fixed IP, configured by cloud-init from network_data.json.
        link = c.run("ip -o link show eth0", hide=True).stdout
        assert nic.mac in link
        assert f"{nic.address}/24" in c.run("ip -o -4 addr show eth0", hide=True).stdout
        assert c.run("ls /etc/systemd/network/", hide=True).stdout.strip().startswith("10-cloud-init-eth0")
        assert f"default via {nic.gateway}" in c.run("ip route", hide=True).stdout
        # cloud-init's /etc/hosts names the server and the mirror relayed into its namespace.
        assert m.name in c.run(f"getent hosts {m.name}", hide=True).stdout.split()[1:]
        assert c.run("getent hosts deb.debian.org", hide=True).stdout.split()[0] == "127.0.0.1"
        head = c.run(
            "curl -sS -o /dev/null -w '%{http_code}' http://deb.debian.org/debian/dists/bookworm/Release",
            hide=True,
        ).stdout
        assert head == "200"


def test_console_is_the_real_console_with_cloud_inits_host_key_block(first):
    from devenv.machines import Machine

    m, nic, instance, keys, _ = first
    again = Machine(m.name, m.run_dir)  # what nova-compute does after a restart: same run_dir, same machine
    assert again.running()
    console = again.console_output()
    assert "-----BEGIN SSH HOST KEY KEYS-----" in console
    assert "Cloud-init v. 22.4.2 running 'init-local'" in console
    assert {k[0] for k in keys} == {"ssh-ed25519", "ecdsa-sha2-nistp256"}
    on_disk = (m.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
    assert tuple(on_disk) in keys


def test_two_machines_of_one_image_at_once(first, cloud_image, user_key):
    from devenv.machines import Machine

    a, a_nic, _, a_keys, tmp = first
    b = Machine(f"qwt-{os.urandom(3).hex()}", tmp / "b")
    b_nic = _nic(11)
    try:
        _, b_keys, _ = _boot(b, cloud_image, b_nic, user_key, tmp, "jobs-b", "first")
        assert set(a_keys).isdisjoint(b_keys)  # host keys are made per server, not per image
        for nic, keys, name in ((a_nic, a_keys, a.name), (b_nic, b_keys, b.name)):
            with pinned_connection(nic.address, 22, "debian", user_key[0], keys) as c:
                assert c.run("hostname", hide=True).stdout.strip() == name
                assert (
                    c.sudo("cat /etc/queue-workers/x.env", hide=True).stdout.strip()
                    == f"QW_QUEUE=jobs-{(name == a.name and 'a') or 'b'}"
                )
        # Machines of one subnet reach each other (as servers on one cloud network do), and
        # nothing else is forwarded: not an address of the subnet no machine holds, not off this host.
        with pinned_connection(a_nic.address, 22, "debian", user_key[0], a_keys) as c:
            for address, reached in ((b_nic.address, True), (f"{SUBNET}.99", False), ("192.0.2.1", False)):
                probe = c.run(_CONNECT.format(address=address), warn=True, hide=True)
                assert probe.ok == reached, (address, probe.stdout, probe.stderr)
    finally:
        b.destroy()
    assert _leftovers(b) == []
    assert a.running()


def test_shutdown_snapshot_and_a_new_server_from_it(first, user_key):
    """Clean stop, createImage, a server of that image: new instance id, so cloud-init runs
    again (new host keys, the new user data); then a hard power-off and a destroy."""
    from devenv.machines import Machine, cache_dir, drop_unpacked, file_sha256

    a, a_nic, a_instance, a_keys, tmp = first
    with pinned_connection(a_nic.address, 22, "debian", user_key[0], a_keys) as c:
        c.sudo("sh -c 'echo baked > /etc/qw-baked; echo layer > /var/lib/docker/qw-probe'", hide=True)
    t0 = time.monotonic()
    assert a.shutdown(60)
    print(f"\nclean shutdown: {time.monotonic() - t0:.1f} s")
    assert not a.running()
    assert "Power-Off" in a.console_output() or "poweroff" in a.console_output().lower()

    snap = tmp / "snapshot.tar"
    a.snapshot(snap)
    listing = subprocess.run(
        ["tar", "-tf", str(snap)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "./etc/qw-baked" in listing and "./var/lib/docker/qw-probe" in listing
    assert not [p for p in listing if p.startswith("./var/lib/cloud/seed/config_drive/")]  # not the disk's

    c_m = Machine(f"qwt-{os.urandom(3).hex()}", tmp / "c")
    c_nic = _nic(12)
    try:
        instance, c_keys, _ = _boot(c_m, snap, c_nic, user_key, tmp, "jobs-c", "second")
        assert instance != a_instance
        assert set(c_keys).isdisjoint(a_keys)
        with pinned_connection(c_nic.address, 22, "debian", user_key[0], c_keys) as c:
            assert c.run("cat /etc/qw-baked", hide=True).stdout.strip() == "baked"
            # dockerd's folder (not on the overlay) is part of the disk image too
            assert c.sudo("cat /var/lib/docker/qw-probe", hide=True).stdout.strip() == "layer"
            assert c.run("cat /var/lib/cloud/data/instance-id", hide=True).stdout.strip() == instance
            assert c.run("cat /run/qw-runcmd", hide=True).stdout.strip() == "second"
            assert c.sudo("cat /etc/queue-workers/x.env", hide=True).stdout.strip() == "QW_QUEUE=jobs-c"
        t0 = time.monotonic()
        c_m.poweroff()
        print(f"hard power-off: {time.monotonic() - t0:.2f} s")
        assert not c_m.running()
    finally:
        c_m.destroy()
        assert drop_unpacked(snap)
    assert _leftovers(c_m) == []
    assert not (cache_dir() / file_sha256(snap)).exists()
    c_m.destroy()  # idempotent


def test_bad_input_is_refused_with_what_is_allowed(tmp_path):
    from devenv.machines import Machine, Nic

    with pytest.raises(ValueError, match="MAC address"):
        Nic("FA:16:3E:00:00:01", "10.0.0.5", 24, "10.0.0.1")
    with pytest.raises(ValueError, match="outside"):
        Nic("fa:16:3e:00:00:01", "10.0.0.5", 24, "10.0.1.1")
    with pytest.raises(ValueError, match="2-13 characters"):
        Machine("qw-this-name-is-too-long", tmp_path)
    if os.geteuid() == 0:
        not_an_image = tmp_path / "x.tar"
        not_an_image.write_text("not a tar")
        m = Machine("qwt-bad", tmp_path / "m")
        with pytest.raises(ValueError, match="not a rootfs archive"):
            m.create(not_an_image, [_nic(13)], None, [])
        assert _leftovers(m) == []

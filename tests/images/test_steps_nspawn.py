"""The bake steps on a builder where systemd runs (systemd-nspawn): dockerd started by systemd, the
image loaded, and the baked unit starting the consumer container from the env file cloud-init
would write, which then consumes from the local Zaqar. Then the same on the real base image
debian-12 as the local cloud boots it (devenv.machines, real cloud-init), through the snapshot
that is the template to a server of it that real cloud-init configures from its user data."""

from __future__ import annotations

import os
import time

import pytest

from images import steps, template
from images.ssh import host_keys_from_console, pinned_connection

pytestmark = pytest.mark.builder


@pytest.fixture()
def nspawn_host(builder_rootfs, bake_key):
    from devenv.builder.nspawn import NspawnHost

    with NspawnHost(authorized_key=bake_key[1]) as host:
        yield host


def test_unit_starts_the_consumer_container_which_drains_the_queue(
    nspawn_host, bake_key, workload_archive, zaqar, queue_name
):
    from workload.queues import open_queue

    t = template.load()
    keys = host_keys_from_console(nspawn_host.console_log())
    with pinned_connection(nspawn_host.address, 22, "debian", bake_key[0], keys) as c:
        assert c.run("systemctl is-system-running --wait", warn=True, hide=True).stdout.strip() in (
            "running",
            "degraded",
        )
        steps.run_all(c, t, bake_key[1], archive=workload_archive)
        assert c.run("systemctl is-active docker.service", hide=True).stdout.strip() == "active"

        # What cloud-init writes at boot on a scaling-group member, then the unit as boot starts it.
        q = queue_name("nspawn")
        nspawn_host.forward_loopback_port(zaqar.port)
        env = {**zaqar.env(), "QW_QUEUE": q, "QW_EXEC": "cat", "QW_ENSURE": "1"}
        steps._put_root(c, "".join(f"{k}={v}\n" for k, v in env.items()), t.env_file, mode="0600")
        queue = open_queue("zaqar", q, **zaqar.queue_options)
        queue.ensure()
        queue.post([{"n": i} for i in range(5)])
        c.sudo(f"systemctl start {t.unit_name}", hide=True)

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and queue.stats().total > 0:
            time.sleep(1)
        state = c.run(f"systemctl is-active {t.unit_name}", warn=True, hide=True).stdout.strip()
        running = c.sudo("docker ps --format '{{.Names}} {{.Image}}'", hide=True).stdout
        logs = c.sudo("docker logs queue-workers-consumer 2>&1 | tail -5", warn=True, hide=True).stdout
        assert state == "active", logs
        assert f"queue-workers-consumer {t.workload_image}" in running
        assert queue.stats().total == 0, logs


def _ssh_when_keys_printed(machine, address, key_path, timeout=180):
    """A pinned connection once cloud-init printed the host keys on the machine's console."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert machine.running(), machine.console_output()[-3000:]
        console = machine.console_output()
        if "-----END SSH HOST KEY KEYS-----" in console:
            c = pinned_connection(address, 22, "debian", key_path, host_keys_from_console(console))
            try:
                c.run("true", hide=True)
                return c
            except Exception:
                c.close()
        time.sleep(0.3)
    raise AssertionError(f"no SSH to {address}:\n{machine.console_output()[-3000:]}")


def test_template_baked_on_the_cloud_image_boots_consumers_with_cloud_init(
    bake_key, workload_archive, zaqar, queue_name, tmp_path
):
    """The bake's steps on a server of the real base image debian-12 (devenv.machines, real
    cloud-init from a config drive); clean stop and snapshot give the template; a server of the
    template gets its env file from user data through cloud-init, and the baked unit starts the
    consumer container, which drains the local Zaqar."""
    from devenv.builder import rootfs
    from devenv.builder.host import missing_prerequisite
    from devenv.machines import Machine, Nic, drop_unpacked
    from tests.devenv.conftest import write_config_drive
    from workload.queues import open_queue

    if reason := missing_prerequisite(("mmdebstrap", "systemd-nspawn", "socat")):
        pytest.skip(reason=reason)
    t = template.load()
    image = rootfs.cloud_image()
    tag = os.urandom(3).hex()
    builder = Machine(f"qwk-{tag}", tmp_path / "builder")
    member = Machine(f"qwm-{tag}", tmp_path / "member")
    b_nic, m_nic = (Nic(f"fa:16:3e:00:22:{n:02x}", f"10.249.18.{n}", 24, "10.249.18.1") for n in (10, 11))
    snap = tmp_path / "template.tar"
    try:
        write_config_drive(
            tmp_path / "drive-b",
            name=builder.name,
            public_key=bake_key[1],
            user_data="#cloud-config\n{}\n",
            nic=b_nic,
        )
        builder.create(image, [b_nic], tmp_path / "drive-b", [])
        builder.start()
        t0 = time.monotonic()
        with _ssh_when_keys_printed(builder, b_nic.address, bake_key[0]) as c:
            facts = steps.run_all(c, t, bake_key[1], archive=workload_archive)
        print(f"\nbake steps on debian-12: {time.monotonic() - t0:.0f} s, {facts}")
        assert builder.shutdown(60)
        builder.snapshot(snap)
        builder.destroy()

        q = queue_name("tmpl")
        env = {**zaqar.env(), "QW_QUEUE": q, "QW_EXEC": "cat", "QW_ENSURE": "1"}
        body = "".join(f"      {k}={v}\n" for k, v in env.items())
        # As images/consumer/cloud-init.example.yaml: the env file, then runcmd starts the unit.
        # (Measured here: at boot systemd drops the enabled unit's own start job, "ordering
        # cycle" with Debian's cloud-final.service, which is After=multi-user.target; so only
        # the runcmd starts it, and a reboot would not.)
        user_data = (
            f"#cloud-config\nwrite_files:\n  - path: {t.env_file}\n    permissions: '0600'\n"
            f"    content: |\n{body}runcmd:\n  - [systemctl, start, --no-block, {t.unit_name}]\n"
        )
        write_config_drive(
            tmp_path / "drive-m", name=member.name, public_key=bake_key[1], user_data=user_data, nic=m_nic
        )
        queue = open_queue("zaqar", q, **zaqar.queue_options)
        queue.ensure()
        queue.post([{"n": i} for i in range(5)])
        member.create(snap, [m_nic], tmp_path / "drive-m", [zaqar.port])
        member.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "multi-user.target" not in member.console_output():
            time.sleep(0.5)
        assert "Found ordering cycle" not in member.console_output(), (
            "the consumer unit is in an ordering cycle"
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and queue.stats().total > 0:
            assert member.running()
            time.sleep(1)
        # The bake removed its key and cloud-init put it back from the new server's metadata.
        with _ssh_when_keys_printed(member, m_nic.address, bake_key[0]) as c:
            state = c.run(f"systemctl is-active {t.unit_name}", warn=True, hide=True).stdout.strip()
            logs = c.sudo("docker logs queue-workers-consumer 2>&1 | tail -5", warn=True, hide=True).stdout
        assert state == "active", logs
        assert queue.stats().total == 0, logs
    finally:
        builder.destroy()
        member.destroy()
        if snap.exists():
            drop_unpacked(snap)

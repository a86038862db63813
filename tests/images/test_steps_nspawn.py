"""The bake steps on a builder where systemd runs (systemd-nspawn): dockerd started by systemd, the
image loaded, and the baked unit starting the consumer container from the env file cloud-init
would write, which then consumes from the local Zaqar."""
from __future__ import annotations

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


def test_unit_starts_the_consumer_container_which_drains_the_queue(nspawn_host, bake_key, workload_archive,
                                                                   zaqar, queue_name):
    from workload.queues import open_queue

    t = template.load()
    keys = host_keys_from_console(nspawn_host.console_log())
    with pinned_connection(nspawn_host.address, 22, "debian", bake_key[0], keys) as c:
        assert c.run("systemctl is-system-running --wait", warn=True, hide=True).stdout.strip() in (
            "running", "degraded")
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

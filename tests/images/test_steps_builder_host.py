"""The Fabric bake steps against a real builder host (Debian rootfs, sshd on loopback, pinned key)."""

from __future__ import annotations

import paramiko
import pytest

from images import steps, template
from images.ssh import HostKeyError, host_keys_from_console, pinned_connection

pytestmark = pytest.mark.builder


def _connect(host, bake_key, keys=None):
    keys = keys if keys is not None else host_keys_from_console(host.console_log())
    return pinned_connection("127.0.0.1", host.port, "debian", bake_key[0], keys)


def test_console_log_keys_pin_the_host_and_any_other_key_is_rejected(builder_host, bake_key):
    keys = host_keys_from_console(builder_host.console_log())
    assert {k for k, _ in keys} == {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}
    with _connect(builder_host, bake_key) as c:
        assert c.run("hostname", hide=True).stdout.strip() == "qw-builder"

    # A key that is not the one cloud-init printed: the connection is refused, nothing runs.
    other = paramiko.Ed25519Key.from_private_key_file(bake_key[0])  # any ed25519 key but the host's
    wrong = [("ssh-ed25519", other.get_base64())]
    c = _connect(builder_host, bake_key, wrong)
    with pytest.raises(paramiko.SSHException):
        c.run("touch /tmp/should-not-exist", hide=True)
    c.close()


def test_console_log_without_host_keys_is_an_error():
    with pytest.raises(HostKeyError, match="BEGIN SSH HOST KEY KEYS"):
        host_keys_from_console("cloud-init: still booting\n")


def test_bake_steps_install_docker_load_image_install_unit_and_generalise(
    builder_host, bake_key, workload_archive
):
    import json

    t = template.load()
    record = json.loads(workload_archive.with_suffix(".json").read_text())
    with _connect(builder_host, bake_key) as c:
        facts = steps.run_all(c, t, bake_key[1], archive=workload_archive)

        # Docker really installed from Debian, with log rotation configured.
        assert c.run("dpkg-query -W -f='${Status}' docker.io", hide=True).stdout == "install ok installed"
        assert facts["docker_version"].startswith("Docker version")
        daemon = json.loads(c.run("cat /etc/docker/daemon.json", hide=True).stdout)
        assert daemon["log-opts"]["max-size"] and daemon["log-driver"] == "json-file"
        # The image loaded is the one `make image` built (same id), and it ran on the builder.
        assert facts["workload_image_id"] == record["image_id"]
        # The unit is in place, enabled for boot, and reads the env file cloud-init writes.
        assert (
            c.run("systemctl is-enabled queue-workers-consumer.service", hide=True).stdout.strip()
            == "enabled"
        )
        unit = c.run("cat /etc/systemd/system/queue-workers-consumer.service", hide=True).stdout
        assert "EnvironmentFile=/etc/queue-workers/consumer.env" in unit
        assert (
            c.run("cat /etc/queue-workers/image.env", hide=True).stdout.strip()
            == f"QW_WORKLOAD_IMAGE={t.workload_image}"
        )
        # Generalised: no host keys, empty machine-id, the bake key gone, no apt lists.
        assert c.run("ls /etc/ssh/ | grep -c ssh_host_ || true", hide=True).stdout.strip() == "0"
        assert c.run("stat -c %s /etc/machine-id", hide=True).stdout.strip() == "0"
        assert bake_key[1].split()[1] not in c.run("cat ~/.ssh/authorized_keys", hide=True).stdout
        assert c.run("ls /var/lib/apt/lists | wc -l", hide=True).stdout.strip() == "0"

    # The bake key no longer logs in (the host keys are gone too): nobody keeps a way in.
    c = _connect(builder_host, bake_key)
    with pytest.raises(Exception):
        c.run("true", hide=True)
    c.close()

"""A builder host where systemd really runs: the cached rootfs booted as a devenv.machines Machine.

    with NspawnHost(authorized_key=pub) as host:
        host.address, host.port (22), host.console_log(), host.forward_loopback_port(p)

The rootfs (read-only cache) is the lower layer of the machine's overlay; the machine boots
systemd in a network namespace of its own (a veth pair, 10.231.x.0/30, no config drive: the
address is set before boot). Its sshd listens on port 22 inside that namespace only, reachable
from this machine at `address`. Debian's mirror and `forward_loopback_port(p)` (the local Zaqar,
for the consumer the unit starts) are the machine's loopback relays. What a cloud image's
cloud-init would do at first boot (host keys, the `debian` user with the bake's key) is done
here in the overlay before boot: the builder rootfs has no cloud-init (devenv.machines boots the
real cloud image with it).
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

from devenv.builder.host import LOGIN_USER, SSHBuilder
from devenv.builder.rootfs import CGROUP_DROPIN
from devenv.machines import MIRROR_HOST, Machine, Nic, run


class _Booted:
    """What SSHBuilder waits on: ``poll()`` is None while the machine runs."""

    def __init__(self, machine: Machine):
        self.machine, self.returncode = machine, None

    def poll(self):
        if self.returncode is None and not self.machine.running():
            self.returncode = -1
        return self.returncode


class NspawnHost(SSHBuilder):
    """A booted Debian (systemd as PID 1) reachable over SSH at address:22; see the module docstring."""

    what = "nspawn builder"
    log_name = "machine/console.log"
    workdir_prefix = "qw-nspawn-"
    start_timeout = 60.0
    required_commands = ("systemd-nspawn", "socat")
    port = 22

    def __init__(self, authorized_key: str, hostname: str = "qw-builder"):
        super().__init__(authorized_key, hostname)
        self.subnet = self._free_subnet()
        self.address = f"10.231.{self.subnet}.2"
        self.machine = Machine(f"qwb-{os.urandom(3).hex()}", self.workdir / "machine")
        self.merged = self.machine.root

    @staticmethod
    def _free_subnet() -> int:
        used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
        free = [n for n in range(1, 255) if f"10.231.{n}." not in used]
        return random.choice(free)

    # -- lifecycle ---------------------------------------------------------------------------
    def _boot(self, log) -> _Booted:
        mac = "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))  # locally administered
        nic = Nic(mac, self.address, 30, f"10.231.{self.subnet}.1")
        self.machine.create_from_root(self.lower, [nic], None, [])
        self._prepare_rootfs()
        self.machine.start()
        return _Booted(self.machine)

    def _host_key_folder(self) -> Path:
        return self.merged / "etc/ssh"

    def _prepare_rootfs(self) -> None:
        mg = self.merged
        run("chroot", str(mg), "ssh-keygen", "-A", "-q")
        run("chroot", str(mg), "useradd", "-m", "-s", "/bin/bash", LOGIN_USER)
        (mg / "etc/sudoers.d/90-cloud-init-users").write_text(f"{LOGIN_USER} ALL=(ALL) NOPASSWD:ALL\n")
        os.chmod(mg / "etc/sudoers.d/90-cloud-init-users", 0o440)
        ssh = mg / "home" / LOGIN_USER / ".ssh"
        ssh.mkdir(mode=0o700)
        (ssh / "authorized_keys").write_text(self.authorized_key + "\n")
        run("chroot", str(mg), "chown", "-R", f"{LOGIN_USER}:", f"/home/{LOGIN_USER}/.ssh")
        (mg / "etc/hosts").write_text(f"127.0.0.1 localhost {self.hostname}\n127.0.0.1 {MIRROR_HOST}\n")
        (mg / "etc/hostname").write_text(self.hostname + "\n")
        dropin = mg / "etc/systemd/system/docker.service.d"
        dropin.mkdir(parents=True)
        (dropin / "10-nspawn-cgroups.conf").write_text(CGROUP_DROPIN)
        (mg / "etc/machine-id").write_text("")

    def forward_loopback_port(self, port: int) -> None:
        """Make 127.0.0.1:port inside the host's namespace reach 127.0.0.1:port of this machine."""
        self.machine.forward_port(port)

    def power_off(self) -> None:
        """Power the machine off and remove it (relays, network, overlay); the work folder stays until stop()."""
        self.machine.destroy()

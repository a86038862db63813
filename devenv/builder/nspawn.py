"""A builder host where systemd really runs: the cached rootfs booted with systemd-nspawn.

    with NspawnHost(authorized_key=pub) as host:
        host.address, host.port (22), host.console_log(), host.forward_loopback_port(p)

The rootfs (read-only cache) is the lower layer of an overlay. The container boots systemd in
a network namespace this class makes (`ip netns add` + a veth pair, 10.231.x.0/30): its sshd
listens on port 22 inside that namespace only, reachable from this machine at `address`. Debian's
mirror is reached through a relay: inside the namespace deb.debian.org resolves to 127.0.0.1:80,
where socat forwards over a Unix socket to a socat on this machine. `forward_loopback_port(p)`
makes 127.0.0.1:p inside the namespace reach this machine's 127.0.0.1:p the same way (the local
Zaqar, for the consumer the unit starts). Docker needs the cgroup v1 controllers read-write: a
drop-in for docker.service (placed before boot, part of this test host, not of the template)
remounts them.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

from devenv.builder.host import LOGIN_USER, SSHBuilder

MIRROR_HOST = "deb.debian.org"

_CGROUP_DROPIN = """[Service]
# nspawn mounts the cgroup v1 controllers read-only; dockerd needs to create cgroups in them.
ExecStartPre=+/bin/sh -c 'mount -o remount,bind,rw /sys/fs/cgroup 2>/dev/null; for d in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$d" 2>/dev/null || true; done'
"""


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class NspawnHost(SSHBuilder):
    """A booted Debian (systemd as PID 1) reachable over SSH at address:22; see the module docstring."""

    what = "nspawn builder"
    log_name = "console.log"
    workdir_prefix = "qw-nspawn-"
    start_timeout = 60.0
    required_commands = ("systemd-nspawn",)
    port = 22

    def __init__(self, authorized_key: str, hostname: str = "qw-builder"):
        super().__init__(authorized_key, hostname)
        self.merged = self.workdir / "merged"
        tag = os.urandom(3).hex()
        self.netns, self.veth_host, self.veth_ns = f"qwb-{tag}", f"qwh{tag}", f"qwc{tag}"
        self.subnet = self._free_subnet()
        self.address = f"10.231.{self.subnet}.2"
        self.procs: list[subprocess.Popen] = []
        self.nspawn: subprocess.Popen | None = None
        self._mounted = False
        self._netns_made = False

    @staticmethod
    def _free_subnet() -> int:
        used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
        free = [n for n in range(1, 255) if f"10.231.{n}." not in used]
        return random.choice(free)

    # -- lifecycle ---------------------------------------------------------------------------
    def _boot(self, log) -> subprocess.Popen:
        self._prepare_rootfs()
        self._make_netns()
        self._relay(80, MIRROR_HOST, 80)
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--boot", "--console=read-only",
             "-D", str(self.merged), f"--machine=qwb{self.netns[4:]}", f"--hostname={self.hostname}",
             f"--network-namespace-path=/run/netns/{self.netns}", "--capability=all",
             "--system-call-filter=@keyring bpf", f"--bind={self.workdir / 'docker'}:/var/lib/docker"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return self.nspawn

    def _host_key_folder(self) -> Path:
        return self.merged / "etc/ssh"

    def _prepare_rootfs(self) -> None:
        for d in ("upper", "work", "merged", "docker"):
            (self.workdir / d).mkdir()
        up, wk, mg = self.workdir / "upper", self.workdir / "work", self.merged
        _run("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={self.lower},upperdir={up},workdir={wk}", str(mg))
        self._mounted = True
        _run("chroot", str(mg), "ssh-keygen", "-A", "-q")
        _run("chroot", str(mg), "useradd", "-m", "-s", "/bin/bash", LOGIN_USER)
        (mg / "etc/sudoers.d/90-cloud-init-users").write_text(f"{LOGIN_USER} ALL=(ALL) NOPASSWD:ALL\n")
        os.chmod(mg / "etc/sudoers.d/90-cloud-init-users", 0o440)
        ssh = mg / "home" / LOGIN_USER / ".ssh"
        ssh.mkdir(mode=0o700)
        (ssh / "authorized_keys").write_text(self.authorized_key + "\n")
        _run("chroot", str(mg), "chown", "-R", f"{LOGIN_USER}:", f"/home/{LOGIN_USER}/.ssh")
        (mg / "etc/hosts").write_text(f"127.0.0.1 localhost {self.hostname}\n127.0.0.1 {MIRROR_HOST}\n")
        (mg / "etc/hostname").write_text(self.hostname + "\n")
        dropin = mg / "etc/systemd/system/docker.service.d"
        dropin.mkdir(parents=True)
        (dropin / "10-nspawn-cgroups.conf").write_text(_CGROUP_DROPIN)
        (mg / "etc/machine-id").write_text("")

    def _make_netns(self) -> None:
        _run("ip", "netns", "add", self.netns)
        self._netns_made = True
        _run("ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns)
        _run("ip", "link", "set", self.veth_ns, "netns", self.netns)
        _run("ip", "addr", "add", f"10.231.{self.subnet}.1/30", "dev", self.veth_host)
        _run("ip", "link", "set", self.veth_host, "up")
        ns = ["ip", "netns", "exec", self.netns]
        _run(*ns, "ip", "addr", "add", f"{self.address}/30", "dev", self.veth_ns)
        _run(*ns, "ip", "link", "set", self.veth_ns, "up")
        _run(*ns, "ip", "link", "set", "lo", "up")

    def _relay(self, inner_port: int, host: str, port: int) -> None:
        """127.0.0.1:inner_port inside the namespace -> a Unix socket -> host:port from this machine."""
        sock = self.workdir / f"relay-{inner_port}.sock"
        self.procs.append(subprocess.Popen(
            ["socat", f"UNIX-LISTEN:{sock},fork", f"TCP:{host}:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        self.procs.append(subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", "socat",
             f"TCP-LISTEN:{inner_port},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{sock}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    def forward_loopback_port(self, port: int) -> None:
        """Make 127.0.0.1:port inside the host's namespace reach 127.0.0.1:port of this machine."""
        self._relay(port, "127.0.0.1", port)
        time.sleep(0.3)

    def power_off(self) -> None:
        """Power the container off, stop the relays, remove its network and unmount its rootfs."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)  # nspawn asks systemd to power off
            try:
                self.nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.nspawn.pid, signal.SIGKILL)
                self.nspawn.wait(timeout=10)
        self.nspawn = None
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        self.procs = []
        if self._netns_made:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
            subprocess.run(["ip", "link", "del", self.veth_host], capture_output=True)
            self._netns_made = False
        if self._mounted:
            subprocess.run(["umount", "-R", str(self.merged)], capture_output=True)
            subprocess.run(["umount", "-l", str(self.merged)], capture_output=True)
            self._mounted = False

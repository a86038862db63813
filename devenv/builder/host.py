"""A real builder host on this machine: the cached Debian rootfs, running sshd on 127.0.0.1:PORT.

    with BuilderHost(authorized_key=pub) as host:
        host.port, host.host_keys, host.console_log()  # what a cloud server would offer the bake

The rootfs (devenv.builder.rootfs, cached) is the read-only lower layer of an overlay, so every
host starts clean and the cache is never changed. Inside `unshare --mount --uts --pid`, the
overlay, /proc, /sys and /dev are mounted, fresh SSH host keys are made (as cloud-init does on
first boot), a `debian` user with passwordless sudo gets the bake's public key, and `chroot ...
sshd -D` listens on loopback only. apt and dpkg work inside; services cannot start (no systemd):
the steps check installed packages, unit files and `systemctl is-enabled` there. One exception,
so that the image can really be loaded and run: a small watcher plays systemd's part for
docker.service only, starting the real dockerd (data root bind-mounted from the host, no bridge,
no iptables) once the package is installed and the service is enabled. Killing the
unshare process (SIGKILL to its children) removes every mount with the namespace.

`SSHBuilder` holds what this host and the systemd one (devenv.builder.nspawn) share: the work
folder, the wait for sshd, start/stop, the log and the console log.
"""

from __future__ import annotations

import abc
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from devenv.builder import rootfs
from devenv.procs import LOOPBACK, free_port, wait_until

LOGIN_USER = "debian"


def require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionError("the builder host needs root (unshare, overlay mounts, chroot)")


def missing_prerequisite(commands: tuple[str, ...]) -> str | None:
    """Why a local host or machine cannot run here (no root, or one of ``commands`` is not
    installed), or None; what a test's skip reason says."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, overlay mounts, chroot or systemd-nspawn)"
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        return f"{', '.join(missing)} not installed: run `make builder-deps` (devenv/builder/install-deps.sh)"
    return None


class SSHBuilder(abc.ABC):
    """What every local builder host shares: a work folder over the cached rootfs, the wait for
    sshd's banner, start/stop as a ``with`` block, the host's log and the console log a cloud
    would show. A subclass boots the host (:meth:`_boot`), says where sshd answers
    (:attr:`address`, :attr:`port`) and how to power it off (:meth:`power_off`)."""

    what: str  # how errors name the host
    log_name: str  # the file in the work folder that takes the host's output
    workdir_prefix: str
    start_timeout: float  # default seconds for sshd to answer
    required_commands: tuple[str, ...] = ()  # besides root; checked before the rootfs is built
    address: str
    port: int

    def __init__(self, authorized_key: str, hostname: str):
        require_root()
        missing = missing_prerequisite(self.required_commands)
        if missing:
            raise RuntimeError(f"{self.what}: {missing}")
        self.authorized_key = authorized_key.strip()
        self.hostname = hostname
        self.lower = rootfs.builder_host_rootfs()
        self.workdir = Path(tempfile.mkdtemp(prefix=self.workdir_prefix))
        self.host_keys: list[str] = []  # "type base64" lines, as cloud-init prints them
        self._log = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float | None = None):
        """Boot the host and return it once sshd answers; on any failure, stop it again."""
        try:
            (self.workdir / self.log_name).parent.mkdir(exist_ok=True)
            self._log = open(self.workdir / self.log_name, "wb")
            proc = self._boot(self._log)
            wait_until(
                self._sshd_answers,
                self.start_timeout if timeout is None else timeout,
                f"{self.what} (sshd at {self.address}:{self.port})",
                proc,
                str(self.workdir / self.log_name),
            )
            self.host_keys = [
                " ".join(p.read_text().split()[:2])
                for p in sorted(self._host_key_folder().glob("ssh_host_*_key.pub"))
            ]
        except BaseException:
            self.stop()
            raise
        return self

    @abc.abstractmethod
    def _boot(self, log) -> subprocess.Popen:
        """Start the host with its output going to ``log``; return the process whose exit means
        the host is gone."""

    @abc.abstractmethod
    def _host_key_folder(self) -> Path:
        """A folder on this machine holding the host's ``ssh_host_*_key.pub`` files once sshd answers."""

    @abc.abstractmethod
    def power_off(self) -> None:
        """Stop every process of the host (its mounts and network go too); files stay until stop()."""

    def _sshd_answers(self) -> bool:
        with socket.create_connection((self.address, self.port), timeout=1) as s:
            return s.recv(64).startswith(b"SSH-")

    def stop(self) -> None:
        """Power off and remove the host's files."""
        self.power_off()
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- what a cloud would show the baker ---------------------------------------------------
    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.workdir / self.log_name).read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def console_log(self) -> str:
        """A console log as cloud-init writes it on first boot, carrying this host's real keys."""
        lines = [
            "[    0.000000] Linux version 6.1.0-cloud-amd64 (debian) #1 SMP",
            f"Cloud-init v. 22.4.2 running 'init' at {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}.",
            "ci-info: +++++++++++++++++++++++Net device info++++++++++++++++++++++++",
            "<14>Nov 23 00:00:00 cloud-init: #############################################################",
            "<14>Nov 23 00:00:00 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----",
            "<14>Nov 23 00:00:00 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----",
            "<14>Nov 23 00:00:00 cloud-init: #############################################################",
            "-----BEGIN SSH HOST KEY KEYS-----",
        ]
        lines += [f"{k} root@{self.hostname}" for k in self.host_keys]
        lines += [
            "-----END SSH HOST KEY KEYS-----",
            "Cloud-init v. 22.4.2 finished. Datasource DataSourceOpenStackLocal.  Up 9.12 seconds",
        ]
        return "\n".join(lines) + "\n"


class BuilderHost(SSHBuilder):
    """A Debian host reachable over SSH on 127.0.0.1:port; see the module docstring."""

    what = "builder host"
    log_name = "sshd.log"
    workdir_prefix = "qw-builder-"
    start_timeout = 20.0
    address = LOOPBACK

    def __init__(self, authorized_key: str, port: int | None = None, hostname: str = "qw-builder"):
        super().__init__(authorized_key, hostname)
        self.port = port or free_port()
        self.root = self.workdir / "merged"  # visible to this process only inside the namespace
        self.proc: subprocess.Popen | None = None

    def _boot(self, log) -> subprocess.Popen:
        for d in ("upper", "work", "merged", "keys", "docker"):
            (self.workdir / d).mkdir()
        self.proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--uts",
                "--pid",
                "--fork",
                "--kill-child=SIGKILL",
                "--propagation",
                "private",
                "sh",
                "-c",
                self._boot_script(),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.proc

    def _boot_script(self) -> str:
        """The shell script run inside the new namespaces: the steps of a cloud server's first
        boot, one method each, then sshd in the foreground (its exit is the host's)."""
        mg = self.root
        return (
            "\nset -e\n"
            + self._mounts(mg)
            + self._first_boot_identity(mg)
            + self._login_user(mg)
            + self._sshd_config(mg)
            + self._docker_service(mg)
            + f"exec chroot {mg} /usr/sbin/sshd -D -e\n"
        )

    def _mounts(self, mg: Path) -> str:
        """The overlay over the cached rootfs, the kernel file systems, /run, Docker's data root."""
        up, wk = self.workdir / "upper", self.workdir / "work"
        return f"""mount -t overlay overlay -o lowerdir={self.lower},upperdir={up},workdir={wk} {mg}
mount -t proc proc {mg}/proc
mount --rbind /sys {mg}/sys
mount --rbind /dev {mg}/dev
mount -t tmpfs tmpfs {mg}/run
mkdir -p {mg}/run/sshd {mg}/var/lib/docker
mount --bind {self.workdir / "docker"} {mg}/var/lib/docker
cp -L /etc/resolv.conf {mg}/etc/resolv.conf 2>/dev/null || true
"""

    def _first_boot_identity(self, mg: Path) -> str:
        """The hostname and fresh SSH host keys (as cloud-init makes them), copied out to
        :meth:`_host_key_folder`."""
        keys = self.workdir / "keys"
        return f"""hostname {self.hostname}
echo {self.hostname} > {mg}/etc/hostname
chroot {mg} ssh-keygen -A -q
cp {mg}/etc/ssh/ssh_host_ed25519_key.pub {mg}/etc/ssh/ssh_host_ecdsa_key.pub {mg}/etc/ssh/ssh_host_rsa_key.pub {keys}/
"""

    def _login_user(self, mg: Path) -> str:
        """The ``debian`` user with passwordless sudo and the bake's public key."""
        key_q = shlex.quote(self.authorized_key)
        return f"""id {LOGIN_USER} >/dev/null 2>&1 || chroot {mg} useradd -m -s /bin/bash {LOGIN_USER}
echo '{LOGIN_USER} ALL=(ALL) NOPASSWD:ALL' > {mg}/etc/sudoers.d/90-cloud-init-users
chmod 0440 {mg}/etc/sudoers.d/90-cloud-init-users
mkdir -p {mg}/home/{LOGIN_USER}/.ssh
echo {key_q} > {mg}/home/{LOGIN_USER}/.ssh/authorized_keys
chroot {mg} chown -R {LOGIN_USER}: /home/{LOGIN_USER}/.ssh
chmod 700 {mg}/home/{LOGIN_USER}/.ssh
"""

    def _sshd_config(self, mg: Path) -> str:
        """sshd on this host's port, on loopback only, with keys only."""
        return f"""cat > {mg}/etc/ssh/sshd_config.d/50-builder.conf <<EOF
Port {self.port}
ListenAddress 127.0.0.1
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF
"""

    def _docker_service(self, mg: Path) -> str:
        """systemd's part for docker.service only (see the module docstring): in the background,
        the real dockerd once the package is installed and the service is enabled."""
        return f"""(
  while ! [ -x {mg}/usr/sbin/dockerd ] || ! [ -L {mg}/etc/systemd/system/multi-user.target.wants/docker.service ]; do
    sleep 1
  done
  sleep 1
  echo "builder host: docker.service enabled: starting dockerd" >&2
  exec chroot {mg} /usr/sbin/dockerd --bridge=none --iptables=false --ip-masq=false >{self.workdir}/dockerd.log 2>&1
) &
"""

    def _host_key_folder(self) -> Path:
        return self.workdir / "keys"  # copied out of the namespace by the boot script

    def power_off(self) -> None:
        """Kill every process of the host (its mounts go with the namespace); files stay until stop()."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def known_hosts_lines(self) -> list[str]:
        return [f"[127.0.0.1]:{self.port} {k}" for k in self.host_keys]

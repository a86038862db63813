"""Servers of the local cloud: systemd-nspawn machines, each in a network namespace of its own.

    m = Machine("qw-1a2b3c4d", run_dir)
    m.create(image_tar, [Nic(mac, "10.249.0.5", 24, "10.249.0.1")], config_drive_dir, [5000])
    m.start(); m.console_output(); m.shutdown(60); m.snapshot(dest_tar); m.destroy()

The interface the local Nova's compute driver calls (see MACHINE_API.md). Standard library only:
it runs inside nova-compute's virtualenv as well as in the tests. Everything needs root.

How a machine is made, and how it differs from a VM on a real cloud:
- **Disk.** The image (a rootfs tar, optionally gzip) is unpacked once per content (sha256) into
  a shared cache; each machine's root is an overlay over it (upper layer in its run_dir), so a
  second server of one image starts in seconds. /var/lib/docker cannot live on an overlay
  (dockerd's overlay2 needs a real upper fs): it is a folder of the run_dir, seeded from the
  image's /var/lib/docker and put back into snapshots, so it behaves as part of the disk.
- **Config drive.** Nova's config drive directory is copied into the run_dir and bind-mounted
  read-only at /var/lib/cloud/seed/config_drive, where cloud-init's ConfigDrive datasource reads
  a seed: like a real config drive it is a separate device, not part of the root disk (snapshots
  do not carry it).
- **Network.** The network namespace (named after the machine) holds one veth end per port,
  named eth0, eth1, ... inside, with the port's MAC. No DHCP exists here: when the config drive
  has network_data.json (Nova writes it from the port), cloud-init itself renders the static
  address and routes from it (for systemd-networkd), as on a cloud with config drives and no
  DHCP; without one the address is set from the Nic before boot. The host side of each veth
  answers at the subnet's gateway address (a /32, so two machines on one subnet do not fight
  over the subnet route) and routes the fixed IP to the machine: SSH from this machine reaches
  it. Machines on one subnet reach each other as on a cloud network: the host side forwards
  (per veth) and answers ARP for the other machines' addresses (proxy ARP), and a FORWARD rule
  lets through only traffic from the machine's own address to its subnet's addresses on another
  machine's veth (interface group :data:`VETH_GROUP`); everything else a machine sends to be
  forwarded is dropped, so nothing routes off this host and other subnets stay apart.
- **Services of this machine.** ``forward_ports`` relay 127.0.0.1:P inside the namespace over a
  Unix socket to 127.0.0.1:P here (socat; nothing listens on any other address). Debian's
  mirror is relayed the same way at 127.0.0.1:80, which the image's /etc/hosts (written by
  cloud-init from the image's template) names deb.debian.org, as a cloud's images point at
  its own mirror. There is no DNS server.
- **Console.** ``systemd-nspawn --console=read-only`` gives the machine a pty as /dev/console and
  copies what it prints (systemd, cloud-init's host key block, the getty) into console.log.
- **Power.** ``shutdown`` sends systemd's poweroff signal (SIGRTMIN+4, what ``systemctl
  poweroff`` does) to the machine's PID 1; ``poweroff`` SIGKILLs the machine's process tree.
nspawn and the relays run detached (their own session, pids in files), so a new
``Machine(name, run_dir)`` finds a running machine again and nothing dies with the caller.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from devenv.builder.rootfs import MIRROR_HOST, locked
from devenv.builder.rootfs import cache_dir as repo_cache

SEED = "var/lib/cloud/seed/config_drive"
DOCKER = "var/lib/docker"
METADATA_ADDRESS = "169.254.169.254"  # where every cloud serves its metadata API
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,12}$")  # a netns name and, with "-N", a veth name (<= 15)
VETH_GROUP = 7349  # the interface group of every machine's host-side veth (forwarding between them)
_FORWARD_COMMENT = "queue-workers machine network"
SOCKET_DIR = Path("/run/qw-machines")  # short paths: a Unix socket path has at most 107 bytes
_STATE = "machine.json"


@dataclass(frozen=True)
class Nic:
    """One Neutron port as the machine sees it."""

    mac: str  # the port's MAC; the interface inside gets exactly this
    address: str  # the port's fixed IPv4 address
    prefixlen: int  # from the subnet's cidr
    gateway: str | None  # the subnet's gateway_ip

    def __post_init__(self):
        if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", self.mac):
            raise ValueError(
                f"Nic.mac {self.mac!r} is not a MAC address like 'fa:16:3e:12:34:56' (lower case)"
            )
        net = ipaddress.ip_interface(f"{self.address}/{self.prefixlen}")  # raises naming the bad value
        if net.version != 4 or not 8 <= self.prefixlen <= 30:
            raise ValueError(f"Nic {self.address}/{self.prefixlen}: only IPv4 with a prefix of 8 to 30 bits")
        if self.gateway is not None and ipaddress.ip_address(self.gateway) not in net.network:
            raise ValueError(f"Nic.gateway {self.gateway} is outside {net.network}")

    @property
    def host_address(self) -> str:
        """Where this machine answers on the veth: the gateway, else the subnet's first free address."""
        if self.gateway:
            return self.gateway
        net = ipaddress.ip_interface(f"{self.address}/{self.prefixlen}").network
        return next(str(a) for a in net.hosts() if str(a) != self.address)


# -- small process and network helpers (also used by devenv.builder.nspawn) -------------------
def run(*cmd: str) -> str:
    """Run a command, fail with its stderr."""
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def _quiet(*cmd: str) -> None:
    subprocess.run(cmd, capture_output=True)


def spawn_detached(
    argv: list[str], pidfile: Path, output: Path | None = None, netns: str | None = None
) -> int:
    """Start ``argv`` in a session of its own, not a child of this process (it outlives the
    caller and is reaped by init); its pid goes to ``pidfile`` and is returned."""
    pidfile.unlink(missing_ok=True)
    if netns:
        argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
    out = f">>{shlex.quote(str(output))} 2>&1" if output else ">/dev/null 2>&1"
    script = f"echo $$ > {shlex.quote(str(pidfile))}; exec {shlex.join(argv)} </dev/null {out}"
    run("setsid", "--fork", "sh", "-c", script)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return int(pidfile.read_text())
        time.sleep(0.02)
    raise RuntimeError(f"{argv[0]} did not start (no pid in {pidfile})")


def _alive(pid: int, marker: str) -> bool:
    """True if ``pid`` runs (not a zombie) and its command line contains ``marker`` (no pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return _state(pid) not in "ZX" and marker in cmdline


def _descendants(pid: int) -> list[int]:
    """``pid``'s children, grandchildren, ... (breadth first)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(0), [])
        out += kids
        todo += kids
    return out


def _kill(pids: list[int]) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _state(p) not in "ZX"]
        if not left:
            return True
        time.sleep(0.05)
    return False


def _state(pid: int) -> str:
    """The process's state letter from /proc (Z: a zombie), X if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def cache_dir() -> Path:
    """Where unpacked images are kept: <repository cache>/machines/images/<sha256>/ (shared)."""
    return repo_cache() / "machines" / "images"


_DIGESTS: dict[tuple, str] = {}  # (device, inode, size, mtime) -> sha256: each image file is read once


def file_sha256(path: Path) -> str:
    """The file's sha256 (hex), remembered for as long as the file is unchanged."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _hash(path)
    return _DIGESTS[key]


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


_TAR_KEEP = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "--selinux"]


def unpacked_image(image: Path) -> Path:
    """The image's root, unpacked once per content into the shared cache (read-only use)."""
    if not Path(image).is_file():
        raise FileNotFoundError(f"image {image} is not a file (expected a rootfs tar, optionally gzip)")
    digest = file_sha256(image)
    root = cache_dir() / digest
    with locked(cache_dir() / ".lock"):
        if (root / "etc").is_dir():
            return root
        tmp = root.with_name(digest + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        p = subprocess.run(
            ["tar", "-xpf", str(image), "-C", str(tmp), *_TAR_KEEP], capture_output=True, text=True
        )
        if p.returncode != 0 or not (tmp / "etc").is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            raise ValueError(
                f"image {image} is not a rootfs archive (tar with /etc, optionally gzip): "
                f"{p.stderr.strip()[-500:]}"
            )
        tmp.rename(root)
        return root


def drop_unpacked(image: Path) -> bool:
    """Remove the image's unpacked root from the cache (after its Glance image is deleted, or a
    test's snapshot); False if a machine still boots from it (then it stays)."""
    root = cache_dir() / file_sha256(image)
    with locked(cache_dir() / ".lock"):
        if f"lowerdir={root}," in Path("/proc/mounts").read_text():
            return False
        shutil.rmtree(root, ignore_errors=True)
        return True


class Machine:
    """One server: a systemd-nspawn machine booted from an image, in a network namespace of its own."""

    def __init__(self, name: str, run_dir: Path):
        if not NAME_RE.fullmatch(name):
            raise ValueError(
                f"machine name {name!r}: 2-13 characters of a-z, 0-9 and '-', starting with a "
                "letter (it names the network namespace and the veths)"
            )
        if os.geteuid() != 0:
            raise PermissionError("devenv.machines needs root (network namespaces, overlay mounts, nspawn)")
        self.name = name
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "merged"  # the machine's / as this machine sees it (while created)
        self.console_log = self.run_dir / "console.log"
        self.sockets = SOCKET_DIR / name

    # -- state kept in the run_dir -------------------------------------------------------------
    def _state(self) -> dict:
        try:
            return json.loads((self.run_dir / _STATE).read_text())
        except FileNotFoundError:
            return {}

    def _save(self, state: dict) -> None:
        tmp = self.run_dir / (_STATE + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.rename(self.run_dir / _STATE)

    @property
    def nics(self) -> list[Nic]:
        return [Nic(**n) for n in self._state().get("nics", [])]

    def host_veth(self, index: int) -> str:
        return f"{self.name}-{index}"

    # -- create ----------------------------------------------------------------------------------
    def create(
        self, image: Path, nics: list[Nic], config_drive: Path | None, forward_ports: list[int]
    ) -> None:
        """Prepare the machine (overlay over the unpacked image, network namespace, relays); it
        is not started. On any failure what was made is removed again."""
        self.create_from_root(unpacked_image(Path(image)), nics, config_drive, forward_ports)

    def create_from_root(
        self, lower: Path, nics: list[Nic], config_drive: Path | None, forward_ports: list[int]
    ) -> None:
        """:meth:`create` from an already unpacked root folder ``lower`` (never written to)."""
        if self._state():
            raise RuntimeError(f"machine {self.name} already exists in {self.run_dir}: destroy it first")
        if not nics:
            raise ValueError("a machine needs at least one Nic")
        for p in forward_ports:
            if not (0 < int(p) < 65536) or int(p) == 80:
                raise ValueError(f"forward port {p}: must be 1-65535 and not 80 (the mirror relay)")
        if config_drive is not None and not (Path(config_drive) / "openstack").is_dir():
            raise ValueError(
                f"config drive {config_drive} has no openstack/ folder (Nova's config drive layout)"
            )
        if Path(f"/run/netns/{self.name}").exists():
            raise RuntimeError(
                f"network namespace {self.name} exists already (another machine of this name?)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "name": self.name,
            "lower": str(lower),
            "nics": [asdict(n) for n in nics],
            "forward_ports": [int(p) for p in forward_ports],
            "config_drive": config_drive is not None,
            "relays": [],
            "created": time.time(),
        }
        self._save(state)
        try:
            self._mount(lower)
            if config_drive is not None:
                shutil.copytree(config_drive, self.run_dir / "config_drive", symlinks=True)
            self._connect(state)
        except BaseException:
            self.destroy()
            raise

    def _mount(self, lower: Path, seed_docker: bool = True) -> None:
        for d in ("upper", "work", "merged", "docker"):
            (self.run_dir / d).mkdir(exist_ok=True)
        up, wk = self.run_dir / "upper", self.run_dir / "work"
        run(
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={up},workdir={wk}",
            str(self.root),
        )
        # dockerd's storage is a real folder (see the module docstring), seeded from the image.
        if seed_docker and (Path(lower) / DOCKER).is_dir():
            run("cp", "-a", f"{Path(lower) / DOCKER}/.", str(self.run_dir / "docker"))

    def _restore(self) -> None:
        """Mount the overlay and make the network again if they are gone (this host rebooted)."""
        state = self._state()
        if not os.path.ismount(self.root):
            self._mount(Path(state["lower"]), seed_docker=False)
        if not Path(f"/run/netns/{self.name}").exists():
            self._connect(state)

    def _connect(self, state: dict) -> None:
        """The network namespace with one veth per Nic, and the relays into it."""
        network_data = (self.run_dir / "config_drive/openstack/latest/network_data.json").is_file()
        self._make_network(self.nics, configure_inside=not network_data)
        self.sockets.mkdir(parents=True, exist_ok=True)
        state["relays"] = []
        for inner, host, port in [
            (80, MIRROR_HOST, 80),
            *((p, "127.0.0.1", p) for p in state["forward_ports"]),
        ]:
            state["relays"].append(self._relay(inner, host, port))
            self._save(state)  # so that destroy() finds every relay, even if the next one fails

    def _make_network(self, nics: list[Nic], configure_inside: bool) -> None:
        ns = ["ip", "netns", "exec", self.name]
        run("ip", "netns", "add", self.name)
        run(*ns, "ip", "link", "set", "lo", "up")
        for i, nic in enumerate(nics):
            host = self.host_veth(i)
            run(
                "ip",
                "link",
                "add",
                host,
                "type",
                "veth",
                "peer",
                "name",
                f"eth{i}",
                "address",
                nic.mac,
                "netns",
                self.name,
            )
            run("ip", "link", "set", host, "up", "group", str(VETH_GROUP))
            run("ip", "addr", "add", f"{nic.host_address}/32", "dev", host)
            run("ip", "route", "add", f"{nic.address}/32", "dev", host, "src", nic.host_address)
            # to the other machines of its subnet (and nowhere else): see the module docstring
            run(
                "sysctl",
                "-q",
                "-w",
                f"net.ipv4.conf.{host}.forwarding=1",
                f"net.ipv4.conf.{host}.proxy_arp=1",
            )
            for rule in self._forward_rules(host, nic):
                run("iptables", "-A", "FORWARD", *rule)
            if configure_inside:
                # No config drive network data: set what a DHCP server would have handed out.
                run(*ns, "ip", "addr", "add", f"{nic.address}/{nic.prefixlen}", "dev", f"eth{i}")
                run(*ns, "ip", "link", "set", f"eth{i}", "up")
                if nic.gateway and i == 0:
                    run(*ns, "ip", "route", "add", "default", "via", nic.gateway)

    @staticmethod
    def _forward_rules(host: str, nic: Nic) -> list[list[str]]:
        """The FORWARD rules of one host veth: its machine's address to its subnet on another
        machine's veth, nothing else."""
        subnet = str(ipaddress.ip_interface(f"{nic.address}/{nic.prefixlen}").network)
        tag = ["-m", "comment", "--comment", _FORWARD_COMMENT]
        return [
            [
                "-i",
                host,
                "-s",
                f"{nic.address}/32",
                "-d",
                subnet,
                "-m",
                "devgroup",
                "--dst-group",
                str(VETH_GROUP),
                *tag,
                "-j",
                "ACCEPT",
            ],
            ["-i", host, *tag, "-j", "DROP"],
        ]

    def _relay(self, inner_port: int, host: str, port: int) -> list[int]:
        """127.0.0.1:inner_port in the namespace -> a Unix socket -> host:port from this machine."""
        sock = self.sockets / f"{inner_port}.sock"
        outer = spawn_detached(
            ["socat", f"UNIX-LISTEN:{sock},fork,unlink-early", f"TCP:{host}:{port}"],
            self.sockets / f"{inner_port}.outer.pid",
        )
        inner = spawn_detached(
            ["socat", f"TCP-LISTEN:{inner_port},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{sock}"],
            self.sockets / f"{inner_port}.inner.pid",
            netns=self.name,
        )
        # Return once it listens: the process's /proc/PID/net/tcp lists its namespace's sockets.
        # 30 s, not 5: with Nova, Heat and several machines booting on two cores, nsenter + socat
        # took longer than 5 s to listen and Nova's build failed ("the relay ... does not listen").
        listening = f"0100007F:{inner_port:04X} 00000000:0000 0A"
        deadline = time.monotonic() + 30
        # While it runs (state, not _alive: during exec /proc/PID/cmdline can read empty, and a
        # relay that was starting was taken for dead: "does not listen" after a few seconds).
        while time.monotonic() < deadline and _state(inner) not in "ZX":
            with contextlib.suppress(OSError):
                if listening in Path(f"/proc/{inner}/net/tcp").read_text():
                    return [outer, inner]
            time.sleep(0.02)
        _kill([outer, inner])
        raise RuntimeError(
            f"machine {self.name}: the relay to {host}:{port} does not listen on 127.0.0.1:{inner_port}"
        )

    def forward_port(self, port: int) -> None:
        """Add a relay (as ``forward_ports`` in :meth:`create`) to a created machine."""
        state = self._state()
        if port not in state["forward_ports"]:
            state["relays"].append(self._relay(port, "127.0.0.1", port))
            state["forward_ports"].append(port)
            self._save(state)

    def route_metadata(self, port: int) -> None:
        """Send the machine's requests to 169.254.169.254:80 to this machine's 127.0.0.1:``port``
        (Nova's metadata API), from the machine's own address, as a cloud's metadata service
        sees them: a DNAT on the host side of the first veth (and ``route_localnet`` there, so
        that loopback may be a destination and a source on it)."""
        state = self._state()
        veth = self.host_veth(0)
        run("sysctl", "-q", "-w", f"net.ipv4.conf.{veth}.route_localnet=1")
        run("iptables", "-t", "nat", "-A", "PREROUTING", *self._metadata_rule(veth, int(port)))
        state["metadata_port"] = int(port)
        self._save(state)

    @staticmethod
    def _metadata_rule(veth: str, port: int) -> list[str]:
        return [
            "-i",
            veth,
            "-d",
            METADATA_ADDRESS,
            "-p",
            "tcp",
            "--dport",
            "80",
            "-j",
            "DNAT",
            "--to-destination",
            f"127.0.0.1:{port}",
            "-m",
            "comment",
            "--comment",
            "queue-workers machine",
        ]

    # -- power -----------------------------------------------------------------------------------
    def _pid(self) -> int | None:
        try:
            pid = int((self.run_dir / "nspawn.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid, f"-D {self.root}") else None

    def running(self) -> bool:
        """True while the machine's systemd-nspawn process lives."""
        return self._pid() is not None

    def _init_pid(self) -> int | None:
        """The machine's PID 1 (systemd) as this machine numbers it."""
        pid = self._pid()
        if pid is None:
            return None
        for child in _descendants(pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return child
        return None

    def start(self, timeout: float = 30.0) -> None:
        """Boot (systemd as PID 1); returns once the machine's systemd runs."""
        if not self._state():
            raise RuntimeError(f"machine {self.name} is not created (no {self.run_dir / _STATE})")
        if self.running():
            return
        self._restore()
        argv = [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--boot",
            "--console=read-only",
            "-D",
            str(self.root),
            f"--machine={self.name}",
            f"--network-namespace-path=/run/netns/{self.name}",
            # private: nspawn then mounts a sysfs of that namespace (else /sys/class/net shows
            # this machine's interfaces and cloud-init finds no NIC with the port's MAC)
            "--private-network",
            "--resolv-conf=off",  # the image's own (no DNS here), not this machine's
            # what dockerd (installed by a bake) needs inside
            "--capability=all",
            "--system-call-filter=@keyring bpf",
            f"--bind={self.run_dir / 'docker'}:/{DOCKER}",
        ]
        if self._state().get("config_drive"):
            argv.append(f"--bind-ro={self.run_dir / 'config_drive'}:/{SEED}")
        pid = spawn_detached(argv, self.run_dir / "nspawn.pid", output=self.console_log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid, "systemd-nspawn"):
                raise RuntimeError(f"machine {self.name} did not boot:\n{self.console_output()[-3000:]}")
            if self._init_pid():
                return
            time.sleep(0.05)
        self.poweroff()
        raise TimeoutError(f"machine {self.name}: systemd did not start within {timeout:.0f} s")

    def shutdown(self, timeout: float) -> bool:
        """Clean shutdown (as ACPI's power button: systemd's poweroff); True if it stopped within timeout."""
        pid, init = self._pid(), self._init_pid()
        if pid is None:
            return True
        if init is not None:
            os.kill(init, signal.SIGRTMIN + 4)  # what `systemctl poweroff` asks PID 1 for
        else:
            os.kill(pid, signal.SIGTERM)  # nspawn then asks the machine's init to halt
        return _wait_gone([pid], timeout)

    def poweroff(self) -> None:
        """Hard power-off (what libvirt's destroy is): SIGKILL the machine's whole process tree."""
        pid = self._pid()
        if pid is None:
            return
        tree = _descendants(pid)
        _kill(tree)  # the machine's PID 1 first: its pid namespace dies with it
        _kill([pid])
        if not _wait_gone([pid, *tree], 10):
            raise RuntimeError(f"machine {self.name}: processes {tree} survived SIGKILL")

    # -- what the cloud shows ----------------------------------------------------------------------
    def console_output(self) -> str:
        """Everything the machine printed on its console since it was created (all boots)."""
        try:
            return self.console_log.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def snapshot(self, dest: Path) -> None:
        """Write a rootfs tar of the machine's current root (what createImage uploads to Glance).

        A running machine is synced first (crash-consistent, like a live snapshot without a
        guest agent; the bake stops the server first). Left out, as a disk image would not hold
        them: the config drive (a separate device on a cloud), and the mount points of the
        virtual file systems. cloud-init's per-instance state stays, as in a real disk image:
        a server booted from the snapshot has a new instance id, so cloud-init runs again."""
        if not self.root.is_dir() or not os.path.ismount(self.root):
            raise RuntimeError(f"machine {self.name} has no root to snapshot (not created?)")
        os.sync()
        dest = Path(dest)
        tmp = dest.with_name(dest.name + ".part")
        excludes = [f"--exclude=./{SEED}", f"--exclude=./{DOCKER}"]
        # Its pid is kept while it runs: destroy() ends it first, as a hypervisor's delete ends a
        # disk copy in progress (else the overlay is busy and the delete fails).
        tar = subprocess.Popen(
            [
                "tar",
                "-cf",
                str(tmp),
                *_TAR_KEEP,
                "--sparse",
                "--one-file-system",
                *excludes,
                "-C",
                str(self.root),
                ".",
                # dockerd's folder, stored as the disk's /var/lib/docker
                "-C",
                str(self.run_dir),
                "--transform",
                f"s,^docker,./{DOCKER},",
                "docker",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        pidfile = self.run_dir / "snapshot.pid"
        pidfile.write_text(str(tar.pid))
        try:
            _, stderr = tar.communicate()
        finally:
            pidfile.unlink(missing_ok=True)
        if tar.returncode not in (0, 1):  # 1: a file changed while read (a running machine)
            tmp.unlink(missing_ok=True)
            raise RuntimeError(
                f"snapshot of {self.name} failed (tar exited {tar.returncode}): {stderr.strip()[-1000:]}"
            )
        tmp.rename(dest)

    def snapshot_pid(self) -> int | None:
        """The pid of the snapshot's copy while one runs (None otherwise)."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.run_dir / "snapshot.pid").read_text())
            if _alive(pid, "tar"):
                return pid
        return None

    # -- destroy ---------------------------------------------------------------------------------
    def destroy(self) -> None:
        """Power off if running, then remove relays, namespace, veths, overlay and run_dir; idempotent."""
        self.poweroff()
        copying = self.snapshot_pid()
        if copying is not None:  # a snapshot in progress: its copy ends with the machine
            _kill([copying])
            _wait_gone([copying], 10)
        state = self._state()
        for pid in (p for pair in state.get("relays", []) for p in pair):
            if _alive(pid, "socat"):
                _kill([pid])
        if state.get("metadata_port"):
            _quiet(
                "iptables",
                "-t",
                "nat",
                "-D",
                "PREROUTING",
                *self._metadata_rule(self.host_veth(0), state["metadata_port"]),
            )
        for i, nic in enumerate(Nic(**n) for n in state.get("nics", [])):
            for rule in self._forward_rules(self.host_veth(i), nic):
                _quiet("iptables", "-D", "FORWARD", *rule)
        if Path(f"/run/netns/{self.name}").exists():
            _quiet("ip", "netns", "del", self.name)  # takes the inner veth ends, and so their peers
        for i in range(len(state.get("nics", [])) or 8):
            if Path(f"/sys/class/net/{self.host_veth(i)}").exists():
                _quiet("ip", "link", "del", self.host_veth(i))
        if os.path.ismount(self.root):
            run("umount", str(self.root))
        shutil.rmtree(self.sockets, ignore_errors=True)
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)

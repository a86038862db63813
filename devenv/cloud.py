"""The local OpenStack cloud: real Placement, Glance, Neutron and Nova beside devenv's Keystone.

:class:`devenv.controlplane.ControlPlane` with ``cloud=True`` runs these next to Keystone, Heat and
Zaqar, all from the OpenStack virtualenv (``make venv-openstack``), on free 127.0.0.1 ports:

* Placement, Glance (file store), Neutron (ML2 with devenv's no-op mechanism driver, no agents),
  nova-api and Nova's metadata API: their WSGI apps, one process each (devenv.openstack_serve);
* nova-conductor, nova-scheduler and nova-compute (as root): Nova's own commands;
* RabbitMQ (devenv.rabbitmq) as their broker, on loopback.

This module holds the project side: the config files (:class:`CloudConfig`), the databases and
objects built once into the cached state (:func:`init_databases`, :func:`create_objects`), the
fix-ups a copy of that state needs at every start (:func:`relocate_state`), and the processes
(:class:`CloudServices`). Only the standard library and devenv are imported at module level;
openstacksdk (project venv) only where objects are created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tarfile
import threading
from pathlib import Path

from devenv import keystone
from devenv.procs import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
# Bump when what init_databases() or create_objects() make changes, so old caches are not reused.
RECIPE = "2"

# The services (their keystone users are keystone.CLOUD_USERS) and their catalog port names.
WSGI_SERVICES = {
    # port name: (WSGI app, config-dir variable)
    "placement": ("placement.wsgi.api:application", "OS_PLACEMENT_CONFIG_DIR"),
    "glance": ("glance.wsgi.api:application", "OS_GLANCE_CONFIG_DIR"),
    "neutron": ("neutron.wsgi.api:application", "OS_NEUTRON_CONFIG_DIR"),
    "nova": ("nova.wsgi.osapi_compute:application", "OS_NOVA_CONFIG_DIR"),
    "metadata": ("nova.wsgi.metadata:application", "OS_NOVA_CONFIG_DIR"),
}
NOVA_COMMANDS = {
    "nova-conductor": "nova.cmd.conductor:main",
    "nova-scheduler": "nova.cmd.scheduler:main",
    "nova-compute": "nova.cmd.compute:main",
}
COMPUTE_HOST = "local-compute"

# What the cloud offers (made once, in the cached state).
# The servers' network is named as the example stacks name it (queue-workers:network: public,
# a Rackspace-style public network servers attach to directly).
PROVIDER_NETWORK = "public"  # shared flat network the servers get their fixed IPs on
PROVIDER_CIDR = "10.254.77.0/24"
PROVIDER_GATEWAY = "10.254.77.1"
EXTERNAL_NETWORK = "ext-net"  # external flat network floating IPs come from
EXTERNAL_CIDR = "10.254.78.0/24"
EXTERNAL_GATEWAY = "10.254.78.1"
ROUTER = "public-router"  # gateway on ext-net, interface on public: floating IPs work
BASE_IMAGE = "debian-12"
# name: (RAM MiB, vCPUs, disk GiB). general1-* are the names the example stacks ask for.
FLAVORS = {
    "m1.tiny": (512, 1, 1),
    "m1.small": (2048, 1, 10),
    "general1-1": (1024, 1, 20),
    "general1-2": (2048, 2, 40),
}

# The compute driver: devenv's (servers boot as systemd-nspawn machines) when devenv.machines
# exists, Nova's own fake driver otherwise (servers are records only).
MACHINE_DRIVER = "qw_machines.MachineDriver"
FAKE_DRIVER = "fake.FakeDriverWithoutFakeNodes"
# In the run folder: the 127.0.0.1 ports of this machine that servers booted from now on reach at
# their own 127.0.0.1 (besides the catalog's APIs), e.g. a repository mirror (offer_port()).
OFFERED_PORTS = "offered-ports.json"


def machine_name(instance_uuid: str) -> str:
    """The machine (and namespace) name of a server: short enough for interface names."""
    return "qw-" + instance_uuid[:8]


def machines_available() -> bool:
    """True when devenv.machines (the nspawn machines the compute driver boots) is in this tree."""
    return (REPO / "devenv" / "machines.py").exists()


def compute_driver() -> str:
    """The ``compute_driver`` Nova is configured with: $QW_COMPUTE_DRIVER, else devenv's machine
    driver when devenv.machines exists, else Nova's fake driver."""
    return os.environ.get("QW_COMPUTE_DRIVER") or (MACHINE_DRIVER if machines_available() else FAKE_DRIVER)


def installed_version(venv: Path, dist: str) -> str:
    """The version of ``dist`` installed in ``venv`` (from its .dist-info folder)."""
    found = sorted(Path(venv).glob(f"lib/python3*/site-packages/{dist}-*.dist-info"))
    if not found:
        raise FileNotFoundError(
            f"{dist} is not installed in {venv}; run `make venv-openstack` (or set "
            "QW_OPENSTACK_VENV to a virtualenv made from devenv/requirements-openstack.txt)"
        )
    return found[-1].name[len(dist) + 1 : -len(".dist-info")]


def state_key(venv: Path, image: Path) -> str:
    """Names the cached cloud state by the service versions, the base image and this recipe."""
    versions = "_".join(
        f"{short}-{installed_version(venv, dist)}"
        for short, dist in (
            ("nova", "nova"),
            ("neutron", "neutron"),
            ("glance", "glance"),
            ("placement", "openstack_placement"),
        )
    )
    return f"{versions}_img-{_sha256(image)[:12]}_r{RECIPE}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def base_image() -> Path:
    """The rootfs archive uploaded to Glance as ``debian-12``.

    ``devenv.builder.rootfs.cloud_image()`` (Debian bookworm with cloud-init) when that builder
    exists in this tree; until then a placeholder archive (an os-release file only) that the fake
    driver never boots, so Glance and the image lookups still work.
    """
    try:
        from devenv.builder.rootfs import cloud_image  # type: ignore[attr-defined]
    except ImportError:
        return _placeholder_image()
    return Path(cloud_image())


def _placeholder_image() -> Path:
    path = Path(os.environ.get("QW_CACHE_DIR") or REPO / ".cache") / "cloud" / "placeholder-rootfs.tar"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        data = b'PRETTY_NAME="placeholder rootfs (no machines in this tree)"\nID=debian\n'
        info = tarfile.TarInfo("etc/os-release")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
    tmp.rename(path)
    return path


# --- configuration ---------------------------------------------------------------------------


@dataclasses.dataclass
class CloudConfig:
    """Everything the config files of one run depend on."""

    venv: Path
    state: Path  # the (copy of the) state: databases, glance images, nova state_path
    run_dir: Path  # config folders, logs, lock folders, instances
    ports: dict  # keystone, nova, metadata, placement, glance, neutron
    secrets: dict
    transport_url: str  # the broker
    driver: str = FAKE_DRIVER

    def auth(self, user: str, section_extra: str = "") -> str:
        """Password-auth options for service user ``user`` (project service)."""
        return (
            f"auth_type = password\nauth_url = http://127.0.0.1:{self.ports['keystone']}/v3\n"
            f"username = {user}\npassword = {self.secrets[user]}\n"
            f"project_name = {keystone.SERVICE_PROJECT}\nuser_domain_name = Default\n"
            f"project_domain_name = Default\nregion_name = {keystone.REGION}\n{section_extra}"
        )

    def authtoken(self, user: str, service_type: str) -> str:
        """``[keystone_authtoken]`` for a service validating tokens as ``user``."""
        return (
            "[keystone_authtoken]\n"
            f"www_authenticate_uri = http://127.0.0.1:{self.ports['keystone']}/v3\n"
            "interface = public\n"
            # Application credentials with access rules are refused (401) without it.
            f"service_type = {service_type}\n" + self.auth(user)
        )

    def common(self, service: str) -> str:
        lock = self.run_dir / "lock" / service
        lock.mkdir(parents=True, exist_ok=True)
        return f"[DEFAULT]\nlog_file = {self.run_dir / (service + '.log')}\ndebug = {keystone._debug()}\n"

    def conf_dir(self, service: str) -> Path:
        path = self.run_dir / "etc" / service
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_all(self) -> dict[str, Path]:
        """Write every service's config; returns ``{service: config folder}``."""
        return {
            "placement": self.write_placement(),
            "glance": self.write_glance(),
            "neutron": self.write_neutron(),
            "nova": self.write_nova(),
        }

    def _lock(self, service: str) -> str:
        return f"[oslo_concurrency]\nlock_path = {self.run_dir / 'lock' / service}\n"

    def write_placement(self) -> Path:
        d = self.conf_dir("placement")
        (d / "placement.conf").write_text(
            self.common("placement")
            + f"[placement_database]\nconnection = sqlite:///{self.state / 'placement.sqlite'}\n"
            + "[api]\nauth_strategy = keystone\n"
            + self.authtoken("placement", "placement")
            + self._lock("placement")
        )
        return d

    def write_glance(self) -> Path:
        d = self.conf_dir("glance")
        images = self.state / "glance"
        for sub in ("images", "staging", "tasks"):
            (images / sub).mkdir(parents=True, exist_ok=True)
        (d / "glance-api.conf").write_text(
            self.common("glance")
            + "enabled_backends = fs:file\n"
            + "image_size_cap = 8589934592\n"
            + f"[database]\nconnection = sqlite:///{self.state / 'glance.sqlite'}\n"
            + "[glance_store]\ndefault_backend = fs\n"
            + f"[fs]\nfilesystem_store_datadir = {images / 'images'}\n"
            + f"[os_glance_staging_store]\nfilesystem_store_datadir = {images / 'staging'}\n"
            + f"[os_glance_tasks_store]\nfilesystem_store_datadir = {images / 'tasks'}\n"
            + "[paste_deploy]\nflavor = keystone\n"
            + f"config_file = {self.venv / 'etc' / 'glance' / 'glance-api-paste.ini'}\n"
            + "[oslo_messaging_notifications]\ndriver = noop\n"
            + self.authtoken("glance", "image")
            + self._lock("glance")
        )
        return d

    def write_neutron(self) -> Path:
        d = self.conf_dir("neutron")
        (d / "plugins" / "ml2").mkdir(parents=True, exist_ok=True)
        (d / "neutron.conf").write_text(
            self.common("neutron")
            + "core_plugin = ml2\nservice_plugins = router\nauth_strategy = keystone\n"
            + f"transport_url = {self.transport_url}\n"
            + f"api_paste_config = {self.venv / 'etc' / 'neutron' / 'api-paste.ini'}\n"
            # No DHCP, L2 or L3 agents: servers get their addresses from the config drive.
            + "dhcp_agent_notification = false\nrpc_workers = 0\nrpc_state_report_workers = 0\n"
            + "api_workers = 1\nnotify_nova_on_port_status_changes = true\n"
            + "notify_nova_on_port_data_changes = true\n"
            + f"[database]\nconnection = sqlite:///{self.state / 'neutron.sqlite'}\n"
            + self.authtoken("neutron", "network")
            + "[nova]\n"
            + self.auth("neutron")
            + "[oslo_messaging_notifications]\ndriver = noop\n"
            + self._lock("neutron")
        )
        (d / "plugins" / "ml2" / "ml2_conf.ini").write_text(
            "[ml2]\ntype_drivers = flat,local,vxlan\ntenant_network_types = vxlan\n"
            "mechanism_drivers = qw_noop\nextension_drivers = port_security\n"
            f"[ml2_type_flat]\nflat_networks = {EXTERNAL_NETWORK},{PROVIDER_NETWORK}\n"
            "[ml2_type_vxlan]\nvni_ranges = 1:1000\n"
            "[securitygroup]\nenable_security_group = true\nfirewall_driver = noop\n"
        )
        return d

    def write_nova(self) -> Path:
        d = self.conf_dir("nova")
        (self.run_dir / "instances").mkdir(parents=True, exist_ok=True)
        (self.state / "nova").mkdir(parents=True, exist_ok=True)
        nova_db = self.state / "nova.sqlite"
        # Nova's WSGI apps read api-paste.ini from their config folder.
        shutil.copy(self.venv / "etc" / "nova" / "api-paste.ini", d / "api-paste.ini")
        (d / "nova.conf").write_text(
            self.common("nova")
            + f"transport_url = {self.transport_url}\n"
            + f"host = {COMPUTE_HOST}\nmy_ip = 127.0.0.1\n"
            + f"state_path = {self.state / 'nova'}\ninstances_path = {self.run_dir / 'instances'}\n"
            + f"compute_driver = {self.driver}\n"
            + "vif_plugging_is_fatal = false\nvif_plugging_timeout = 0\n"
            + "heal_instance_info_cache_interval = -1\nreport_interval = 2\n"
            # A server that powers itself off (a drained consumer's unit) shows SHUTOFF within
            # seconds, as libvirt's lifecycle events make it on a real cloud (default 600 s).
            + "sync_power_state_interval = 3\n"
            + "[api]\nauth_strategy = keystone\ndhcp_domain =\n"
            + f"[api_database]\nconnection = sqlite:///{self.state / 'nova_api.sqlite'}\n"
            + f"[database]\nconnection = sqlite:///{nova_db}\n"
            + "[conductor]\nworkers = 1\n[scheduler]\nworkers = 1\n"
            # Maps nova-compute's host to cell1 once it first reports (then kept in the state).
            + "discover_hosts_in_cells_interval = 2\n"
            + self.authtoken("nova", "compute")
            + "[placement]\n"
            + self.auth("nova")
            # No Neutron metadata agent: requests reach the metadata API from the server's own
            # address (devenv.machines routes 169.254.169.254 there), which Nova maps to the
            # instance through Neutron's ports, as it does without a metadata proxy.
            + "[neutron]\n"
            + self.auth("nova", "service_metadata_proxy = false\n")
            + "[glance]\n"
            + self.auth("nova")
            + "[cinder]\n"
            + self.auth("nova")
            # Without it Neutron's policy refuses nova's delete of a server's port.
            + "[service_user]\nsend_service_user_token = true\n"
            + self.auth("nova")
            + "[oslo_messaging_notifications]\ndriver = noop\n"
            + "[notifications]\nnotification_format = unversioned\n"
            + "[vnc]\nenabled = false\n[spice]\nenabled = false\n"
            + "[compute]\n"
            + "[quota]\ninstances = 20\ncores = 40\nram = 102400\n"
            # Where the metadata API listens: the driver routes each server's 169.254.169.254 here.
            + f"[qw_machines]\nmetadata_port = {self.ports['metadata']}\n"
            + f"offered_ports_file = {self.run_dir / OFFERED_PORTS}\n"
            + self._lock("nova")
        )
        return d


def offered_ports(run_dir: Path) -> list[int]:
    """The ports :func:`offer_port` offers now (read by the compute driver at each boot)."""
    try:
        return [int(p) for p in json.loads((Path(run_dir) / OFFERED_PORTS).read_text())]
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def offer_port(run_dir: Path, port: int):
    """While inside: servers booted meanwhile reach this machine's 127.0.0.1:``port`` at their
    own 127.0.0.1:``port`` (relayed, as the catalog's APIs are), as a cloud's network carries
    a mirror or a repository its servers use."""
    path = Path(run_dir) / OFFERED_PORTS

    def write(ports):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(set(ports))))
        tmp.rename(path)

    write([*offered_ports(run_dir), int(port)])
    try:
        yield
    finally:
        write([p for p in offered_ports(run_dir) if p != int(port)])


# --- the cached state --------------------------------------------------------------------


def _run(cmd: list, what: str, env: dict | None = None) -> None:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-4000:]}")


def init_databases(cfg: CloudConfig, dirs: dict[str, Path]) -> None:
    """Create the Placement, Glance, Neutron and Nova databases of a new state (no server needed).

    Placement's and Glance's are made in the background while Neutron's and then Nova's are made
    here; the first error of either side is raised once all are done.
    """
    env = service_env()
    errors: list = []
    background = [
        threading.Thread(target=_capture_into, args=(errors, _run, cmd, what, env))
        for cmd, what in _placement_and_glance_syncs(cfg, dirs)
    ]
    for t in background:
        t.start()
    _init_neutron(cfg, dirs, env)
    _init_nova(cfg, dirs, env)
    for t in background:
        t.join()
    if errors:
        raise errors[0]


def _placement_and_glance_syncs(cfg: CloudConfig, dirs: dict[str, Path]) -> list[tuple[list, str]]:
    """The two schema syncs that depend on nothing else: (command, what it is)."""
    bin_ = cfg.venv / "bin"
    return [
        (
            [bin_ / "placement-manage", "--config-dir", dirs["placement"], "db", "sync"],
            "placement-manage db sync",
        ),
        (
            [bin_ / "glance-manage", "--config-file", dirs["glance"] / "glance-api.conf", "db_sync"],
            "glance-manage db_sync",
        ),
    ]


def _init_neutron(cfg: CloudConfig, dirs: dict[str, Path], env: dict) -> None:
    """Neutron's schema from its models, stamped at head: its alembic migrations fail on sqlite
    (ALTER of constraints)."""
    bin_ = cfg.venv / "bin"
    neutron_conf = [
        "--config-file",
        dirs["neutron"] / "neutron.conf",
        "--config-file",
        dirs["neutron"] / "plugins" / "ml2" / "ml2_conf.ini",
    ]
    _run(
        [
            bin_ / "python",
            "-c",
            "import sys, sqlalchemy as sa; from neutron.db.migration.models import head;"
            "head.get_metadata().create_all(sa.create_engine(sys.argv[1]))",
            f"sqlite:///{cfg.state / 'neutron.sqlite'}",
        ],
        "neutron schema from its models",
        env,
    )
    _run([bin_ / "neutron-db-manage", *neutron_conf, "stamp", "heads"], "neutron-db-manage stamp heads", env)


def _init_nova(cfg: CloudConfig, dirs: dict[str, Path], env: dict) -> None:
    """Nova's API database, cell0 and cell1, then the cells' schema."""
    nova = [cfg.venv / "bin" / "nova-manage", "--config-dir", dirs["nova"]]
    _run([*nova, "api_db", "sync"], "nova-manage api_db sync", env)
    _run(
        [
            *nova,
            "cell_v2",
            "map_cell0",
            "--database_connection",
            f"sqlite:///{cfg.state / 'nova_cell0.sqlite'}",
        ],
        "nova-manage cell_v2 map_cell0",
        env,
    )
    _run(
        [*nova, "cell_v2", "create_cell", "--name", "cell1", "--verbose"],
        "nova-manage cell_v2 create_cell",
        env,
    )
    _run([*nova, "db", "sync"], "nova-manage db sync", env)


def _capture_into(errors: list, func, *args) -> None:
    try:
        func(*args)
    except BaseException as exc:  # re-raised by the caller's thread
        errors.append(exc)


def service_env() -> dict:
    """Environment of every cloud process: the repository importable (devenv's plugins, the
    compute driver), native threads instead of eventlet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["OS_NOVA_DISABLE_EVENTLET_PATCHING"] = "1"
    env.pop("OS_CLOUD", None)
    return env


def relocate_state(state: Path, built_at: str, transport_url: str) -> None:
    """Fix what a copied state records of where it was built: Glance's image locations and Nova's
    cell mappings (database paths, the broker URL). No service may be running on it."""
    new = str(state)
    con = sqlite3.connect(str(state / "glance.sqlite"))
    try:
        con.execute("UPDATE image_locations SET value = replace(value, ?, ?)", (built_at, new))
        con.commit()
    finally:
        con.close()
    con = sqlite3.connect(str(state / "nova_api.sqlite"))
    try:
        con.execute(
            "UPDATE cell_mappings SET database_connection = replace(database_connection, ?, ?)",
            (built_at, new),
        )
        con.execute("UPDATE cell_mappings SET transport_url = ? WHERE name = 'cell1'", (transport_url,))
        con.commit()
    finally:
        con.close()


def create_objects(admin, image: Path, progress=print) -> None:
    """Flavors, the provider and external networks with their subnets and router, and the base
    image, through the running cloud's APIs. ``admin`` is an openstacksdk Connection (admin)."""
    for name, (ram, vcpus, disk) in FLAVORS.items():
        if admin.compute.find_flavor(name) is None:
            admin.compute.create_flavor(name=name, ram=ram, vcpus=vcpus, disk=disk, is_public=True)
    public = admin.network.create_network(
        name=EXTERNAL_NETWORK,
        is_router_external=True,
        provider_network_type="flat",
        provider_physical_network=EXTERNAL_NETWORK,
    )
    admin.network.create_subnet(
        network_id=public.id,
        name=f"{EXTERNAL_NETWORK}-subnet",
        ip_version=4,
        cidr=EXTERNAL_CIDR,
        gateway_ip=EXTERNAL_GATEWAY,
        is_dhcp_enabled=False,
    )
    provider = admin.network.create_network(
        name=PROVIDER_NETWORK,
        is_shared=True,
        provider_network_type="flat",
        provider_physical_network=PROVIDER_NETWORK,
    )
    subnet = admin.network.create_subnet(
        network_id=provider.id,
        name=f"{PROVIDER_NETWORK}-subnet",
        ip_version=4,
        cidr=PROVIDER_CIDR,
        gateway_ip=PROVIDER_GATEWAY,
        is_dhcp_enabled=False,
    )
    router = admin.network.create_router(name=ROUTER, external_gateway_info={"network_id": public.id})
    admin.network.add_interface_to_router(router, subnet_id=subnet.id)
    progress(f"cloud: uploading {image.name} ({image.stat().st_size >> 20} MiB) to Glance as {BASE_IMAGE}")
    created = admin.image.create_image(
        name=BASE_IMAGE,
        filename=str(image),
        disk_format="raw",
        container_format="bare",
        visibility="public",
        os_distro="debian",
        os_version="12",
        wait=True,
        allow_duplicates=True,
        validate_checksum=False,
    )
    admin.image.wait_for_status(created, status="active", wait=300)


# --- processes ------------------------------------------------------------------------------


class CloudServices:
    """The cloud's processes for one run, started and stopped by PID."""

    def __init__(self, cfg: CloudConfig, dirs: dict[str, Path]):
        self.cfg = cfg
        self.dirs = dirs
        self.procs: dict[str, subprocess.Popen] = {}

    def _spawn(self, name: str, cmd: list) -> None:
        out = open(self.cfg.run_dir / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(
            [str(c) for c in cmd],
            cwd=REPO,
            env=service_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def start_apis(self) -> None:
        """Start the WSGI services (they need Keystone only when the first request comes)."""
        py = self.cfg.venv / "bin" / "python"
        for name, (app, dir_env) in WSGI_SERVICES.items():
            conf_dir = self.dirs["nova" if name == "metadata" else name]
            self._spawn(
                name,
                [
                    py,
                    "-m",
                    "devenv.openstack_serve",
                    "--app",
                    app,
                    "--port",
                    self.cfg.ports[name],
                    "--config-dir-env",
                    f"{dir_env}={conf_dir}",
                    "--access-log",
                    self.cfg.run_dir / f"{name}.access.log",
                ],
            )

    def start_floating_ips(self) -> None:
        """devenv's L3 agent (devenv.floating_ips), as Neutron's service user."""
        conf = self.cfg.conf_dir("floating-ips") / "floating-ips.json"
        conf.touch(mode=0o600)
        conf.write_text(
            json.dumps(
                {
                    "keystone_url": f"http://127.0.0.1:{self.cfg.ports['keystone']}/v3",
                    "username": "neutron",
                    "password": self.cfg.secrets["neutron"],
                    "project_name": keystone.SERVICE_PROJECT,
                }
            )
        )
        py = self.cfg.venv / "bin" / "python"
        self._spawn("floating-ips", [py, "-m", "devenv.floating_ips", "--config", conf])

    def start_nova_services(self) -> None:
        """Start conductor, scheduler and compute (they need the broker)."""
        nova_dir = self.dirs["nova"]
        py = self.cfg.venv / "bin" / "python"
        for command, main in NOVA_COMMANDS.items():
            # Through the shim, so their sqlite transactions take the write lock up front too.
            self._spawn(
                command, [py, "-m", "devenv.openstack_serve", "--main", main, "--", "--config-dir", nova_dir]
            )

    def wait_apis(self, timeout: float = 120) -> None:
        """Wait until every WSGI service answers on its port."""
        from devenv.controlplane import _http_ok

        for name in WSGI_SERVICES:
            port = self.cfg.ports[name]
            wait_until(
                lambda: _http_ok(f"http://127.0.0.1:{port}/"),
                timeout,
                name,
                self.procs[name],
                str(self.cfg.run_dir / f"{name}.out"),
            )

    def check_alive(self) -> None:
        """Raise if a service this object started has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                from devenv.procs import log_tail

                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}"
                    f"{log_tail(str(self.cfg.run_dir / (name + '.out')))}"
                    f"{log_tail(str(self.cfg.run_dir / 'nova.log'))}"
                )

    def delete_servers(self, admin_session, timeout: float = 120) -> None:
        """Delete every server of every project through Nova (what a user's delete does), so the
        compute driver tears its machine down; used before the services stop."""
        from keystoneauth1 import adapter

        nova = adapter.Adapter(admin_session, service_type="compute", interface="public")

        def servers():
            resp = nova.get("/servers?all_tenants=1", raise_exc=False)
            return resp.json()["servers"] if resp.status_code == 200 else []

        for server in servers():
            nova.delete(f"/servers/{server['id']}", raise_exc=False)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not servers(), timeout, "servers deleted")

    def destroy_machines(self) -> None:
        """Destroy any machine still in the instances folder (nova-compute is stopped): nothing
        of a server (nspawn process, namespace, veths, mounts) outlives the cloud."""
        instances = self.cfg.run_dir / "instances"
        if not machines_available() or not instances.is_dir():
            return
        from devenv.machines import Machine

        for run_dir in instances.iterdir():
            if run_dir.is_dir() and len(run_dir.name) == 36:
                Machine(machine_name(run_dir.name), run_dir).destroy()

    def stop(self) -> None:
        """Stop every process by its PID, in parallel; nova-compute last (it owns the machines),
        then destroy any machine left behind."""
        compute = self.procs.pop("nova-compute", None)
        threads = [threading.Thread(target=stop_group, args=(p, 15)) for p in self.procs.values()]
        for t in threads:
            t.start()
        stop_group(compute, 30)
        for t in threads:
            t.join()
        self.procs.clear()
        self.destroy_machines()
        from devenv import floating_ips

        floating_ips.clear()  # what the agent left if it died before its own cleanup


def stop_group(proc: subprocess.Popen | None, timeout: float) -> None:
    """Stop a service we started and the workers it forked (nova-conductor forks one): its
    process group, which is its own (started with start_new_session): SIGTERM, then SIGKILL."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout)


def new_ports() -> dict:
    """Free loopback ports for the cloud's APIs."""
    return {name: free_port() for name in WSGI_SERVICES}


def wait_compute_ready(
    admin_session, state: Path, since: str, timeout: float = 120, check=lambda: None
) -> None:
    """Wait until servers can be scheduled: nova-compute has reported since ``since`` (UTC ISO
    time; an older heartbeat is the cached state's), its host is mapped to cell1, and its node
    is a resource provider in Placement."""
    from keystoneauth1 import adapter

    nova = adapter.Adapter(admin_session, service_type="compute", interface="public")
    placement = adapter.Adapter(admin_session, service_type="placement", interface="public")

    def mapped() -> bool:
        con = sqlite3.connect(str(state / "nova_api.sqlite"))
        try:
            return bool(con.execute("SELECT 1 FROM host_mappings WHERE host = ?", (COMPUTE_HOST,)).fetchall())
        finally:
            con.close()

    def ready():
        check()
        services = nova.get("/os-services?binary=nova-compute", raise_exc=False)
        if services.status_code != 200:
            return False
        up = [
            s
            for s in services.json()["services"]
            if s["state"] == "up" and s["status"] == "enabled" and (s["updated_at"] or "") >= since
        ]
        if not up or not mapped():
            return False
        rps = placement.get("/resource_providers", raise_exc=False)
        return rps.status_code == 200 and bool(rps.json()["resource_providers"])

    wait_until(ready, timeout, "nova-compute (reporting, host mapped, resource provider in placement)")

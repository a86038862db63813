"""The local Nova's compute driver: each server is a systemd-nspawn machine (devenv.machines).

Runs inside nova-compute (the OpenStack virtualenv, as root, with the repository on PYTHONPATH).
Nova loads drivers from ``nova.virt`` only, so ``make venv-openstack`` places a one-line
``nova/virt/qw_machines.py`` that re-exports :class:`MachineDriver`; nova.conf then says
``compute_driver = qw_machines.MachineDriver``.

It keeps Nova's fake driver for everything a real host would not change here (resources, node
identity, interfaces) and makes the server itself real:

* spawn: the server's Glance image (a rootfs archive) is downloaded once per image into
  ``instances_path/_base``; its Neutron ports become :class:`devenv.machines.Nic`; the config
  drive is a folder written from Nova's own ``InstanceMetadata(...).metadata_for_config_drive()``
  (user data, key, metadata, network_data.json), which real cloud-init reads as a ConfigDrive
  seed; the catalog's 127.0.0.1 ports are forwarded into the machine's namespace;
* power_off is a clean shutdown (the power button), falling back to a hard power-off; destroy
  is Nova's delete on a real hypervisor: a hard power-off, then the overlay and namespace go;
* get_info reports the machine's real state (Nova's power-state sync reads it);
* get_console_output is the machine's console; snapshot archives its root and uploads it (a
  delete during a snapshot ends the copy and completes, as on libvirt).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

from keystoneauth1 import loading as ks_loading
from nova import conf as nova_conf
from nova import exception
from nova.api.metadata import base as instance_metadata
from nova.compute import power_state, task_states
from nova.image import glance
from nova.virt import fake, hardware
from oslo_config import cfg
from oslo_log import log as logging

from devenv.cloud import machine_name, offered_ports
from devenv.machines import Machine, Nic

CONF = nova_conf.CONF
# Our own option (nova-compute registers no metadata API options): where Nova's metadata API
# listens on this machine, for each server's 169.254.169.254.
CONF.register_opts(
    [
        cfg.IntOpt("metadata_port", help="port of the metadata API on 127.0.0.1"),
        cfg.StrOpt("offered_ports_file", help="JSON list of further 127.0.0.1 ports servers reach"),
    ],
    group="qw_machines",
)
LOG = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT = 60.0  # seconds a clean stop may take before the hard power-off


def nics_from_network_info(network_info) -> list[Nic]:
    """One Nic per port of ``network_info`` with its first IPv4 fixed address."""
    nics = []
    for vif in network_info or []:
        for subnet in vif["network"]["subnets"]:
            v4 = [ip for ip in subnet["ips"] if ip["version"] == 4]
            if not v4:
                continue
            gateway = subnet.get("gateway") or {}
            nics.append(
                Nic(
                    mac=vif["address"],
                    address=v4[0]["address"],
                    prefixlen=int(str(subnet["cidr"]).split("/")[1]),
                    gateway=gateway.get("address") or None,
                )
            )
            break
    return nics


def write_config_drive(instance, injected_files, network_info, dest: Path) -> Path:
    """Write what Nova puts on a config drive into the folder ``dest`` (Nova's own code)."""
    md = instance_metadata.InstanceMetadata(instance, content=injected_files, network_info=network_info)
    for path, data in md.metadata_for_config_drive():
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data if isinstance(data, bytes) else str(data).encode())
    return dest


class MachineDriver(fake.FakeDriverWithoutFakeNodes):
    """FakeDriverWithoutFakeNodes whose servers really boot (see the module docstring)."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self.root = Path(CONF.instances_path)
        self._images_lock = threading.Lock()
        self._ports: list[int] | None = None

    # --- helpers ------------------------------------------------------------------------------
    def _machine(self, instance) -> Machine:
        return Machine(machine_name(instance.uuid), self.root / instance.uuid)

    def _image(self, context, image_id: str) -> Path:
        """The image's archive, downloaded from Glance once per image."""
        base = self.root / "_base"
        base.mkdir(parents=True, exist_ok=True)
        path = base / image_id
        with self._images_lock:
            if not path.exists():
                tmp = base / f".{image_id}.part"
                glance.API().download(context, image_id, dest_path=str(tmp))
                tmp.rename(path)
        return path

    def _forward_ports(self) -> list[int]:
        """The 127.0.0.1 ports of every endpoint in the catalog (what a server may call), and
        those the cloud offers its servers now (devenv.cloud.offer_port)."""
        offered = []
        if CONF.qw_machines.offered_ports_file:
            offered = offered_ports(Path(CONF.qw_machines.offered_ports_file).parent)
        return sorted({*self._catalog_ports(), *offered})

    def _catalog_ports(self) -> list[int]:
        if self._ports is None:
            auth = ks_loading.load_auth_from_conf_options(CONF, "service_user")
            sess = ks_loading.load_session_from_conf_options(CONF, "service_user", auth=auth)
            catalog = auth.get_access(sess).service_catalog.catalog
            ports = set()
            for service in catalog:
                for endpoint in service.get("endpoints", []):
                    url = urlsplit(endpoint["url"])
                    # Port 80 is each machine's relay to Debian's mirror (devenv.machines).
                    if url.hostname == "127.0.0.1" and url.port and url.port != 80:
                        ports.add(url.port)
            self._ports = sorted(ports)
        return self._ports

    # --- the server's life ----------------------------------------------------------------------
    def spawn(
        self,
        context,
        instance,
        image_meta,
        injected_files,
        admin_password,
        allocations,
        network_info=None,
        block_device_info=None,
        power_on=True,
        accel_info=None,
    ):
        super().spawn(
            context,
            instance,
            image_meta,
            injected_files,
            admin_password,
            allocations,
            network_info,
            block_device_info,
            power_on,
            accel_info,
        )
        machine = self._machine(instance)
        run_dir = self.root / instance.uuid
        try:
            image = self._image(context, image_meta.id)
            drive = write_config_drive(
                instance,
                injected_files,
                network_info,
                Path(tempfile.mkdtemp(prefix="config-drive-", dir=self.root)),
            )
            try:
                machine.create(image, nics_from_network_info(network_info), drive, self._forward_ports())
                machine.route_metadata(CONF.qw_machines.metadata_port)
            finally:
                shutil.rmtree(drive, ignore_errors=True)
            if power_on:
                machine.start()
        except Exception:
            LOG.exception("machine %s of %s failed to boot", machine_name(instance.uuid), instance.uuid)
            machine.destroy()
            shutil.rmtree(run_dir, ignore_errors=True)
            super().destroy(context, instance, network_info)
            raise

    def get_info(self, instance, use_cache=True):
        if not (self.root / instance.uuid).exists():
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        running = self._machine(instance).running()
        return hardware.InstanceInfo(state=power_state.RUNNING if running else power_state.SHUTDOWN)

    def list_instances(self):
        return (
            [d.name for d in self.root.iterdir() if d.is_dir() and len(d.name) == 36]
            if self.root.exists()
            else []
        )

    def list_instance_uuids(self):
        return self.list_instances()

    def instance_exists(self, instance):
        return (self.root / instance.uuid).exists()

    def power_off(self, instance, timeout=0, retry_interval=0):
        machine = self._machine(instance)
        if machine.running() and not machine.shutdown(timeout or SHUTDOWN_TIMEOUT):
            LOG.warning(
                "%s did not stop within %s s: hard power-off", instance.uuid, timeout or SHUTDOWN_TIMEOUT
            )
            machine.poweroff()
        if instance.uuid in self.instances:
            super().power_off(instance, timeout, retry_interval)

    def power_on(
        self, context, instance, network_info, block_device_info=None, accel_info=None, share_info=None
    ):
        machine = self._machine(instance)
        if not machine.running():
            machine.start()
        if instance.uuid in self.instances:
            super().power_on(context, instance, network_info, block_device_info, accel_info)

    def reboot(
        self,
        context,
        instance,
        network_info,
        reboot_type,
        block_device_info=None,
        bad_volumes_callback=None,
        accel_info=None,
        share_info=None,
    ):
        machine = self._machine(instance)
        if machine.running():
            if reboot_type.lower() == "hard" or not machine.shutdown(SHUTDOWN_TIMEOUT):
                machine.poweroff()
        machine.start()

    def destroy(
        self,
        context,
        instance,
        network_info,
        block_device_info=None,
        destroy_disks=True,
        destroy_secrets=True,
    ):
        self._machine(instance).destroy()  # a hard power-off first, as on libvirt
        if destroy_disks:
            shutil.rmtree(self.root / instance.uuid, ignore_errors=True)
        super().destroy(context, instance, network_info, block_device_info, destroy_disks, destroy_secrets)

    def get_console_output(self, context, instance):
        if not (self.root / instance.uuid).exists():
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        # Bytes, as libvirt's driver returns them: Nova's manager encodes a str as latin-1, which
        # fails on the UTF-8 a Debian console prints, and decodes the bytes as ASCII with
        # replacement itself.
        return self._machine(instance).console_output().encode("utf-8", "replace")

    def snapshot(self, context, instance, image_id, update_task_state):
        if not (self.root / instance.uuid).exists():
            raise exception.InstanceNotRunning(instance_id=instance.uuid)
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        work = Path(tempfile.mkdtemp(prefix="snapshot-", dir=self.root))
        try:
            archive = work / "root.tar"
            try:
                self._machine(instance).snapshot(archive)
            except Exception:
                if not (self.root / instance.uuid).exists():  # deleted meanwhile: its copy was ended
                    raise exception.InstanceNotFound(instance_id=instance.uuid) from None
                raise
            update_task_state(
                task_state=task_states.IMAGE_UPLOADING, expected_state=task_states.IMAGE_PENDING_UPLOAD
            )
            with open(archive, "rb") as data:
                glance.API().update(
                    context,
                    image_id,
                    {
                        "disk_format": "raw",
                        "container_format": "bare",
                        "properties": {
                            "os_distro": instance.image_meta.properties.get("os_distro", "debian")
                        },
                    },
                    data=data,
                    purge_props=False,
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)

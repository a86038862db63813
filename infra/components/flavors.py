"""The stack's server flavors against the template image: refused before any server is declared.

Nova records the builder server's disk as a snapshot's ``min_disk`` (and its RAM need as
``min_ram`` when set), and refuses to boot the image on a flavor with less: ``pulumi up`` would
only find out when Heat or Nova fail a server, minutes in. Each flavor the stack boots the template
on is looked up (``openstack.compute.get_flavor``) and compared with the image found. A flavor with
disk 0 boots from a volume sized for the image: its disk is no limit.
"""

from __future__ import annotations

import pulumi
import pulumi_openstack as openstack

from infra.components.image import TemplateImage
from infra.config import ConfigError, StackConfig


def flavors_used(cfg: StackConfig) -> dict[str, str]:
    """``{stack key: flavor name}`` of every server the stack boots from the template image."""
    used = {"flavor": cfg.flavor}
    if cfg.monitor_enabled:
        used["monitorFlavor"] = cfg.monitor_flavor
    if cfg.queue_backend == "amqp" and cfg.amqp_broker == "server":
        used["amqpBrokerFlavor"] = cfg.amqp_broker_flavor
    return used


def check_flavors(cfg: StackConfig, image: TemplateImage) -> None:
    """Raise :class:`ConfigError` naming the first flavor that cannot boot ``image``."""
    looked_up: dict[str, openstack.compute.GetFlavorResult] = {}
    for key, name in flavors_used(cfg).items():
        if name not in looked_up:
            looked_up[name] = _flavor(key, name, cfg.region, image)
        _check_fits(key, name, looked_up[name], image)


def _flavor(key: str, name: str, region: str, image: TemplateImage) -> openstack.compute.GetFlavorResult:
    try:
        return openstack.compute.get_flavor(name=name, region=region, opts=pulumi.InvokeOptions(parent=image))
    except Exception as exc:  # noqa: BLE001 - the provider's "no results" (or another lookup failure)
        raise ConfigError(key, name, f"a flavor of region {region!r} (lookup said: {exc})") from None


def _check_fits(key: str, name: str, flavor: openstack.compute.GetFlavorResult, image: TemplateImage) -> None:
    disk, ram = flavor.disk or 0, flavor.ram or 0
    where = f"template image {image.found_name}"
    if disk and disk < image.min_disk_gb:
        raise ConfigError(
            key,
            name,
            f"a flavor with at least {image.min_disk_gb} GB of disk: {name} has {disk} GB and {where} "
            f"has min_disk {image.min_disk_gb} GB (the disk of the flavor it was baked on); choose a "
            f"flavor with a disk of {image.min_disk_gb} GB or more (or disk 0, boot from volume), or bake "
            f"the template on a flavor no bigger than {name} (`fab bake-template --flavor {name}`)",
        )
    if ram < image.min_ram_mb:
        raise ConfigError(
            key,
            name,
            f"a flavor with at least {image.min_ram_mb} MB of RAM: {name} has {ram} MB and {where} "
            f"has min_ram {image.min_ram_mb} MB; choose a flavor with more RAM",
        )

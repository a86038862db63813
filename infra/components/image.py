"""TemplateImage: the baked consumer template, looked up by name and bake properties.

`fab bake-template` names each snapshot ``<name>-v<version>-<UTC time>`` and records on it
``qw_template_name=<name>`` and ``qw_bake_state=complete`` once the bake finished (images/bake.py);
the lookup asks for exactly those, plus any properties the stack adds, and takes the newest.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import pulumi
import pulumi_openstack as openstack

from images.properties import P_HASH, P_NAME, P_STATE, P_VERSION
from infra.config import TYPE_PREFIX


def lookup_filter(name: str, extra: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The name pattern and the properties a usable template image of ``name`` has."""
    pattern = f"^{re.escape(name)}(-v[0-9]+-[0-9]{{8}}-[0-9]{{6}})?$"
    return pattern, {P_NAME: name, P_STATE: "complete", **dict(extra)}


def bake_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """The properties the bake recorded (``qw_*``), without Glance's own (hashes, stores...)."""
    return {k: str(v) for k, v in (properties or {}).items() if k.startswith("qw_")}


def label(properties: Mapping[str, str]) -> str:
    """A short, Nova-metadata-sized name of the template: ``<name>-v<version> <hash[:12]>``."""
    p = properties or {}
    return f"{p.get(P_NAME, '?')}-v{p.get(P_VERSION, '?')} {str(p.get(P_HASH, ''))[:12]}".strip()[:255]


class TemplateImageMissing(pulumi.RunError):
    """No image with that name and those properties exists in the region."""


@dataclasses.dataclass
class TemplateImageArgs:
    name: str  # the template name `fab bake-template` bakes (qw_template_name)
    properties: Mapping[str, str]  # further properties the image must carry; all must match
    region: str


class TemplateImage(pulumi.ComponentResource):
    """The most recent image called ``name`` that carries ``properties`` (a lookup: makes nothing)."""

    image_id: pulumi.Output[str]
    properties: pulumi.Output[dict]  # the bake's qw_* properties of the image found
    label: pulumi.Output[str]
    # known when the program runs (the lookup is a plain invoke): what a flavor must have to boot it
    found_name: str
    min_disk_gb: int  # Nova records the bake's builder flavor's disk here
    min_ram_mb: int

    def __init__(self, name: str, args: TemplateImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}TemplateImage", name, None, opts)
        pattern, props = lookup_filter(args.name, args.properties)
        try:
            found = openstack.images.get_image(
                name_regex=pattern,
                properties=props,
                most_recent=True,
                region=args.region,
                opts=pulumi.InvokeOptions(parent=self),
            )
        except Exception as exc:  # noqa: BLE001 - the provider's "no results" (or another lookup failure)
            raise TemplateImageMissing(
                f"no template image named {args.name!r} with properties {props} in region "
                f"{args.region!r}: run `fab bake-template` for this stack's cloud and region first "
                f"(lookup said: {exc})"
            ) from None
        if not getattr(found, "id", None):
            raise TemplateImageMissing(
                f"no template image named {args.name!r} with properties {props} in region "
                f"{args.region!r}: run `fab bake-template` for this stack's cloud and region first"
            )
        self.found_name = found.name or str(found.id)
        self.min_disk_gb, self.min_ram_mb = found.min_disk_gb or 0, found.min_ram_mb or 0
        self.image_id = pulumi.Output.from_input(found.id)
        self.properties = pulumi.Output.from_input(bake_properties(found.properties or {}))
        self.label = pulumi.Output.from_input(label(found.properties or {}))
        self.register_outputs({"image_id": self.image_id, "properties": self.properties, "label": self.label})

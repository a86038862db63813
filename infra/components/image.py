"""TemplateImage: the baked consumer template, looked up by name and bake properties."""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import pulumi
import pulumi_openstack as openstack


class TemplateImageMissing(pulumi.RunError):
    """No image with that name and those properties exists in the region."""


@dataclasses.dataclass
class TemplateImageArgs:
    name: str  # the image name `fab bake-template` gives its snapshot
    properties: Mapping[str, str]  # what the bake records on the image; all must match
    region: str


class TemplateImage(pulumi.ComponentResource):
    """The most recent image called ``name`` that carries ``properties`` (a lookup: makes nothing)."""

    image_id: pulumi.Output[str]
    properties: pulumi.Output[dict]

    def __init__(self, name: str, args: TemplateImageArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("queue-workers:index:TemplateImage", name, None, opts)
        try:
            found = openstack.images.get_image(name=args.name, properties=dict(args.properties),
                                               most_recent=True, region=args.region,
                                               opts=pulumi.InvokeOptions(parent=self))
        except Exception as exc:  # the provider's "no results" (or another lookup failure)
            raise TemplateImageMissing(
                f"no template image named {args.name!r} with properties {dict(args.properties)} in region "
                f"{args.region!r}: run `fab bake-template` for this stack's cloud and region first "
                f"(lookup said: {exc})") from None
        if not getattr(found, "id", None):
            raise TemplateImageMissing(
                f"no template image named {args.name!r} with properties {dict(args.properties)} in region "
                f"{args.region!r}: run `fab bake-template` for this stack's cloud and region first")
        self.image_id = pulumi.Output.from_input(found.id)
        self.properties = pulumi.Output.from_input(dict(found.properties or {}))
        self.register_outputs({"image_id": self.image_id, "properties": self.properties})

"""Pulumi mocks standing in for the engine and the OpenStack provider (render and tests).

Every resource and every provider call the program makes is recorded, with the URN that shows
its parent chain, so a reader can see exactly what `pulumi up` would ask for.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, cast

import pulumi

from infra import hot

MOCK_IMAGE_ID = "00000000-0000-4000-8000-00000000feed"


def baked_image(
    template: str = "queue-workers-consumer",
    image_id: str = MOCK_IMAGE_ID,
    version: int = 1,
    min_disk_gb: int = 0,
    min_ram_mb: int = 0,
    **extra: str,
) -> dict:
    """An image as `fab bake-template` leaves it: its name, its qw_* properties, Glance's own.

    ``min_disk_gb``: what Nova records from the builder flavor's disk (0: the image sets no minimum).
    """
    return {
        "id": image_id,
        "name": f"{template}-v{version}-20261123-190000",
        "minDiskGb": min_disk_gb,  # the provider's wire names
        "minRamMb": min_ram_mb,
        "properties": {
            "qw_template_name": template,
            "qw_template_version": str(version),
            "qw_template_hash": "ab" * 32,
            "qw_bake_state": "complete",
            "qw_workload_image_digest": "sha256:" + "cd" * 32,
            "os_hash_algo": "sha512",
            "os_hash_value": "ef" * 64,
            "stores": "file",
            **extra,
        },
    }


MOCK_FLAVOR = {"disk": 20, "ram": 4096}  # what getFlavor answers for any name unless told the flavors

MOCK_SECRET = "mock-application-credential-secret"  # a marker tests look for; never a real secret


_SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how the engine wraps a secret value on the wire


def _secret_paths(value: Any, path: str = "") -> list[str]:
    """Where in ``value`` the engine was handed secrets (dotted paths)."""
    if isinstance(value, dict):
        if value.get(_SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            return [path]
        return [p for k, v in value.items() for p in _secret_paths(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _secret_paths(v, f"{path}[{i}]")]
    return []


def _plain(value: Any) -> Any:
    """``value`` with secret wrappers removed (mocks see what the provider would receive)."""
    if isinstance(value, dict):
        if value.get(_SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            return _plain(value.get("value"))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


MOCK_PORT_IP = "10.0.0.10"  # the fixed IP a mock Neutron port gets
MOCK_NETWORK_ID = "00000000-0000-4000-8000-0000000000ae"


def _pure_create(rid: str, inputs: dict, outs: dict) -> tuple[str, dict]:
    """A dynamic resource whose provider makes nothing outside the state (``pure``, e.g. the broker's
    certificate): its real check and create run, as the engine would run them."""
    import base64

    import dill  # type: ignore[import-untyped]  # no stubs published; one call, loads()

    provider = dill.loads(base64.b64decode(inputs["__provider"]))
    if not getattr(provider, "pure", False):
        return rid, outs
    props = {k: v for k, v in inputs.items() if k != "__provider"}
    checked = provider.check({}, props)
    if checked.failures:
        raise ValueError("; ".join(f"{f.property}: {f.reason}" for f in checked.failures))
    made = provider.create(checked.inputs)
    return made.id, {**outs, **made.outs}


@dataclasses.dataclass
class Recorded:
    type: str
    name: str
    inputs: dict
    urn: str
    custom: bool
    provider: str | None
    secret_inputs: list = dataclasses.field(default_factory=list)  # dotted paths sent as secrets
    secret_outputs: list = dataclasses.field(default_factory=list)  # additional_secret_outputs asked for
    delete_before_replace: bool = False

    @property
    def parent_types(self) -> list[str]:
        """The type chain of the URN: ``[root, ..., parent type]`` (empty for top level)."""
        chain = self.urn.split("::")[2].split("$")
        return chain[:-1]


class StackMocks(pulumi.runtime.Mocks):
    """Answers like the engine would after a successful `pulumi up`.

    ``images``: the template images the "cloud" holds (list of dicts with id, name, properties);
    ``getImage`` answers the most recent match, or fails like the provider does. ``flavors``: the
    cloud's flavors by name (``{"disk": GB, "ram": MB}``); ``getFlavor`` answers one, or fails like
    the provider; by default every name is a flavor of :data:`MOCK_FLAVOR`'s size.
    """

    def __init__(
        self,
        images: list[dict] | None = None,
        project: str = "queue-workers",
        stack: str = "stack",
        flavors: dict[str, dict] | None = None,
    ):
        self.images, self.flavors = images, flavors
        self.resources: list[Recorded] = []
        self.calls: list[tuple[str, dict]] = []
        self.project, self.stack = project, stack

    def _urn(self, args: pulumi.runtime.MockResourceArgs) -> str:
        return f"urn:pulumi:{self.stack}::{self.project}::{args.typ}::{args.name}"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = {k: _plain(v) for k, v in dict(args.inputs).items()}
        outs = dict(inputs)
        rid = f"{args.name}-id"
        if args.typ == "openstack:orchestration/stackV1:StackV1":
            base = f"https://orchestration.example/v1/project/stacks/{inputs.get('name')}/{rid}/resources"
            outs["StackOutputs"] = [  # the wire names the provider answers with
                {"outputKey": hot.OUT_SCALE_UP_URL, "outputValue": f"{base}/{hot.SCALE_UP}/signal"},
                {"outputKey": hot.OUT_SCALE_DOWN_URL, "outputValue": f"{base}/{hot.SCALE_DOWN}/signal"},
                {
                    "outputKey": hot.OUT_CURRENT_SIZE,
                    "outputValue": inputs.get("parameters", {}).get("desired"),
                },
            ]
            outs["status"] = "CREATE_COMPLETE"
        elif args.typ == "openstack:identity/applicationCredential:ApplicationCredential":
            outs["secret"] = MOCK_SECRET
        elif args.typ == "openstack:networking/secGroup:SecGroup":
            outs.setdefault("name", args.name)
        elif args.typ == "openstack:networking/port:Port":
            outs["allFixedIps"] = [MOCK_PORT_IP]
        elif args.typ.startswith("pulumi-python:dynamic"):
            rid, outs = _pure_create(rid, inputs, outs)
        self.resources.append(
            Recorded(
                args.typ,
                args.name,
                inputs,
                "",
                bool(args.custom),
                args.provider,
                _secret_paths(dict(args.inputs)),
            )
        )
        return rid, outs

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append((args.token, dict(args.args)))
        if args.token == "openstack:networking/getNetwork:getNetwork":
            return {"id": MOCK_NETWORK_ID, "name": args.args.get("name")}
        if args.token == "openstack:compute/getFlavor:getFlavor":
            return self._flavor(args.args.get("name"))
        if args.token == "openstack:images/getImage:getImage":
            want = args.args
            images = self.images if self.images is not None else [baked_image()]
            props = dict(want.get("properties") or {})
            pattern = want.get("nameRegex")
            found = [
                i
                for i in images
                if (want.get("name") is None or i["name"] == want.get("name"))
                and (pattern is None or re.search(pattern, i["name"]))
                and all(i["properties"].get(k) == v for k, v in props.items())
            ]
            if not found:
                # a failed invoke, with what pulumi-openstack (terraform-provider-openstack) says
                return {}, [
                    (
                        "name",
                        "Your query returned no results. Please change your search criteria and try again.",
                    )
                ]
            img = found[-1]  # the list is oldest first, as created
            return {
                "id": img["id"],
                "name": img["name"],
                "properties": img["properties"],
                "minDiskGb": img.get("minDiskGb", 0),
                "minRamMb": img.get("minRamMb", 0),
                "region": want.get("region"),
            }
        return {}

    def _flavor(self, name: str | None):
        flavor = MOCK_FLAVOR if self.flavors is None else self.flavors.get(name or "")
        if flavor is None:
            return {}, [
                ("name", "Your query returned no results. Please change your search criteria and try again.")
            ]
        return {"id": f"{name}-id", "name": name, "vcpus": 1, **flavor}


class RecordingMonitor(pulumi.runtime.mocks.MockMonitor):
    """The mock monitor, also keeping each resource's URN (which encodes its parent chain)."""

    def RegisterResource(self, request):
        resp = super().RegisterResource(request)
        mocks = cast(StackMocks, self.mocks)  # the monitor is only ever built with StackMocks
        for rec in reversed(mocks.resources):
            if rec.name == request.name and rec.type == request.type and not rec.urn:
                rec.urn = resp.urn
                rec.secret_outputs = list(request.additionalSecretOutputs)
                rec.delete_before_replace = bool(request.deleteBeforeReplace)
                break
        return resp

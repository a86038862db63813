"""What each resource type of the Pulumi program is in the local cloud: create it, delete it.

One :class:`Kind` per Pulumi type token the program declares, each doing with openstacksdk or the
service's own REST API what pulumi-openstack (terraform-provider-openstack) does for that
resource, with the inputs the program computed (their wire names, camelCase), and answering with
the real id and the outputs the program reads. Used by :mod:`devenv.pulumi_local` (a test
harness, not a deployer). A type not listed in :data:`KINDS` is refused by name.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import yaml

# Which catalog service each kind needs (a cloud without it cannot hold the resource).
IDENTITY, ORCHESTRATION, NETWORK, COMPUTE, IMAGE, MESSAGING, BLOCK_STORAGE = (
    "identity",
    "orchestration",
    "network",
    "compute",
    "image",
    "messaging",
    "block-storage",  # Cinder v3 (catalog type block-storage; older clouds list volumev3)
)

#: The catalog types a service may be listed under.
SERVICE_TYPES = {BLOCK_STORAGE: ("block-storage", "volumev3", "volume")}


class UnknownResourceType(LookupError):
    """The program declared a type this harness cannot create: nothing is made up for it."""

    def __init__(self, typ: str):
        super().__init__(
            f"the local deployment does not know resource type {typ!r}; it knows: " + ", ".join(sorted(KINDS))
        )
        self.type = typ


class CreateFailed(RuntimeError):
    """The cloud refused or failed a resource: names it and says what the service answered."""


@dataclasses.dataclass
class Kind:
    """How one Pulumi type becomes a cloud resource.

    ``create(cloud, inputs) -> (id, outputs)``; ``delete(cloud, id, outputs)`` removes it and
    waits until it is gone. ``service`` is the catalog type it needs (None: nothing in the cloud).
    """

    service: str | None
    create: Callable[[Any, dict], tuple[str, dict]]
    delete: Callable[[Any, str, dict], None]
    describe: Callable[[dict], str] = lambda outs: ""


def _raise(what: str, resp) -> None:
    if resp.status_code >= 400:
        raise CreateFailed(f"{what}: {resp.status_code} {resp.text[:500]}")


def _wait(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} after {timeout:.0f} s")
        time.sleep(interval)


# --- the provider and components: nothing in the cloud -------------------------------------------


def _provider_create(cloud, inputs: dict) -> tuple[str, dict]:
    # The provider resource names the clouds.yaml entry every openstack resource uses: it must be
    # the cloud this harness talks to, or the program would deploy somewhere else for a user.
    cloud.check_provider(inputs.get("cloud"), inputs.get("region"))
    return f"provider-{cloud.name}", dict(inputs)


def _nothing(_cloud, _id: str, _outs: dict) -> None:
    return None


PROVIDER = Kind(None, _provider_create, _nothing)
COMPONENT = Kind(None, lambda _c, inputs: ("", dict(inputs)), _nothing)


# --- Keystone: application credentials with access rules ----------------------------------------


def _credential_create(cloud, inputs: dict) -> tuple[str, dict]:
    body = {
        "name": inputs["name"],
        "description": inputs.get("description") or "",
        "roles": [{"name": r} for r in inputs.get("roles") or ()],
        "access_rules": [
            {"service": r["service"], "method": r["method"], "path": r["path"]}
            for r in inputs.get("accessRules") or ()
        ],
        "unrestricted": bool(inputs.get("unrestricted")),
    }
    if inputs.get("expiresAt"):
        body["expires_at"] = inputs["expiresAt"]
    resp = cloud.identity.post(
        f"/users/{cloud.user_id}/application_credentials",
        json={"application_credential": body},
        raise_exc=False,
    )
    _raise(f"Keystone refused application credential {inputs['name']!r}", resp)
    made = resp.json()["application_credential"]
    outs = {
        **inputs,
        "secret": made["secret"],
        "projectId": made["project_id"],
        "accessRules": made.get("access_rules") or [],
        "expiresAt": made.get("expires_at") or "",
    }
    return made["id"], outs


def _credential_delete(cloud, id_: str, outs: dict) -> None:
    rule_ids = {r["id"] for r in outs.get("accessRules") or () if r.get("id")}
    delete_application_credential(cloud.identity, cloud.user_id, id_, rule_ids)


def delete_application_credential(identity, user_id: str, id_: str, rule_ids) -> None:
    """Delete credential ``id_`` and those of its access rules (``rule_ids``) no other credential
    uses: Keystone keeps a credential's rules on the user after it goes, and hands the same rule to
    the next credential that asks for it, so a rule left behind is taken over by someone else."""
    resp = identity.delete(f"/users/{user_id}/application_credentials/{id_}", raise_exc=False)
    if resp.status_code not in (204, 404):
        _raise(f"Keystone refused to delete application credential {id_}", resp)
    creds = identity.get(f"/users/{user_id}/application_credentials").json()
    used = {r["id"] for c in creds["application_credentials"] for r in c.get("access_rules") or ()}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:  # one request each; Keystone answers slowly
        answers = list(
            pool.map(
                lambda rule: identity.delete(f"/users/{user_id}/access_rules/{rule}", raise_exc=False),
                sorted(set(rule_ids) - used),
            )
        )
    refused = [r for r in answers if r.status_code not in (204, 404)]
    if refused:
        _raise(f"Keystone refused to delete access rules of credential {id_}", refused[0])


@contextlib.contextmanager
def application_credentials(owner, auth_url: str | None = None):
    """Factory ``create(rules) -> session`` of fresh application credentials of ``owner``'s user
    (a keystoneauth session) with those access rules; on exit each is deleted with its rules."""
    from keystoneauth1 import adapter
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3

    identity = adapter.Adapter(owner, service_type="identity", interface="public")
    user = owner.get_user_id()
    made: list[tuple[str, set[str]]] = []

    def create(rules):
        body = {"application_credential": {"name": f"qw-{uuid.uuid4().hex[:8]}", "access_rules": rules}}
        resp = identity.post(f"/users/{user}/application_credentials", json=body, raise_exc=False)
        _raise("Keystone refused an application credential", resp)
        cred = resp.json()["application_credential"]
        made.append((cred["id"], {r["id"] for r in cred.get("access_rules") or ()}))
        auth = v3.ApplicationCredential(
            auth_url=auth_url or owner.auth.auth_url,
            application_credential_id=cred["id"],
            application_credential_secret=cred["secret"],
        )
        return ks_session.Session(auth=auth)

    try:
        yield create
    finally:
        for cred_id, rule_ids in made:
            delete_application_credential(identity, user, cred_id, rule_ids)


CREDENTIAL = Kind(
    IDENTITY,
    _credential_create,
    _credential_delete,
    lambda o: f"{len(o.get('accessRules') or [])} access rules",
)


# --- Heat: the worker group's stack ---------------------------------------------------------------


def _stack_path(outs: dict, id_: str) -> str:
    return f"/stacks/{outs['name']}/{id_}"


def _stack_create(cloud, inputs: dict) -> tuple[str, dict]:
    from devenv.heat import NO_NOVA_ENVIRONMENT, wait_stack, without_glance

    template = yaml.safe_load((inputs.get("templateOpts") or {})["Bin"])
    environment: dict = {}
    if cloud.stand_in(COMPUTE):  # no Nova: servers and the server group become OS::Heat::None
        environment = NO_NOVA_ENVIRONMENT
    if cloud.stand_in(IMAGE):  # no Glance to check the image parameter's constraint against
        template = without_glance(template)
    name = inputs["name"]
    resp = cloud.orchestration.post(
        "/stacks",
        json={
            "stack_name": name,
            "template": template,
            "parameters": inputs.get("parameters") or {},
            "environment": environment,
            "timeout_mins": int(inputs.get("timeout") or 60),
            "disable_rollback": bool(inputs.get("disableRollback")),
        },
        raise_exc=False,
    )
    _raise(f"Heat refused stack {name!r}", resp)
    id_ = resp.json()["stack"]["id"]
    path = f"/stacks/{name}/{id_}"
    cloud.remember(id_, {"name": name})  # made: destroy deletes it even if it fails from here on
    stack = wait_stack(cloud.orchestration, path, timeout=60 * int(inputs.get("timeout") or 60))
    if stack["stack_status"] != "CREATE_COMPLETE":
        raise CreateFailed(
            f"Heat stack {name!r} is {stack['stack_status']}: {stack.get('stack_status_reason')}"
        )
    outputs = cloud.orchestration.get(path).json()["stack"].get("outputs") or []
    return id_, {
        **inputs,
        "status": stack["stack_status"],
        "StackOutputs": [
            {
                "outputKey": o["output_key"],
                "outputValue": _text(o.get("output_value")),
                "description": o.get("description") or "",
            }
            for o in outputs
        ],
    }


def _text(value: Any) -> str:
    """An output value as the provider types it (a string): lists and maps as JSON."""
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _stack_delete(cloud, id_: str, outs: dict) -> None:
    from devenv.heat import wait_stack

    path = _stack_path(outs, id_)
    cloud.orchestration.delete(path, raise_exc=False)
    stack = wait_stack(cloud.orchestration, path, timeout=600)
    if stack["stack_status"] != "DELETE_COMPLETE":
        raise CreateFailed(
            f"Heat stack {outs['name']!r} is {stack['stack_status']}: {stack.get('stack_status_reason')}"
        )


STACK = Kind(ORCHESTRATION, _stack_create, _stack_delete, lambda o: o.get("status", ""))


# --- Neutron: the security group and its rules ----------------------------------------------------


def _secgroup_create(cloud, inputs: dict) -> tuple[str, dict]:
    group = cloud.conn.network.create_security_group(
        name=inputs["name"], description=inputs.get("description") or ""
    )
    if inputs.get("deleteDefaultRules"):
        # what the provider does for delete_default_rules: Neutron's default egress rules go
        for rule in list(cloud.conn.network.security_group_rules(security_group_id=group.id)):
            cloud.conn.network.delete_security_group_rule(rule, ignore_missing=True)
    return group.id, {**inputs, "name": group.name, "tenantId": group.project_id}


def _secgroup_delete(cloud, id_: str, _outs: dict) -> None:
    cloud.conn.network.delete_security_group(id_, ignore_missing=True)


_RULE_FIELDS = {
    "direction": "direction",
    "ethertype": "ether_type",
    "protocol": "protocol",
    "portRangeMin": "port_range_min",
    "portRangeMax": "port_range_max",
    "remoteIpPrefix": "remote_ip_prefix",
    "remoteGroupId": "remote_group_id",
    "description": "description",
}


def _rule_create(cloud, inputs: dict) -> tuple[str, dict]:
    attrs = {sdk: inputs[wire] for wire, sdk in _RULE_FIELDS.items() if inputs.get(wire) not in (None, "")}
    rule = cloud.conn.network.create_security_group_rule(security_group_id=inputs["securityGroupId"], **attrs)
    return rule.id, dict(inputs)


def _rule_delete(cloud, id_: str, _outs: dict) -> None:
    cloud.conn.network.delete_security_group_rule(id_, ignore_missing=True)


def _port_create(cloud, inputs: dict) -> tuple[str, dict]:
    """A Neutron port (the broker server's: its fixed IP is known before the server exists)."""
    attrs: dict[str, Any] = {
        "name": inputs.get("name") or "",
        "network_id": inputs["networkId"],
        "admin_state_up": inputs.get("adminStateUp", True),
    }
    if inputs.get("securityGroupIds") is not None:
        attrs["security_group_ids"] = list(inputs["securityGroupIds"])
    if inputs.get("description"):
        attrs["description"] = inputs["description"]
    if inputs.get("fixedIps"):
        attrs["fixed_ips"] = [
            {k: v for k, v in (("subnet_id", f.get("subnetId")), ("ip_address", f.get("ipAddress"))) if v}
            for f in inputs["fixedIps"]
        ]
    if inputs.get("macAddress"):
        attrs["mac_address"] = inputs["macAddress"]
    port = cloud.conn.network.create_port(**attrs)
    cloud.remember(port.id, {})
    return port.id, {
        **inputs,
        "allFixedIps": [f["ip_address"] for f in port.fixed_ips or ()],
        "allSecurityGroupIds": list(port.security_group_ids or ()),
        "macAddress": port.mac_address,
        "tenantId": port.project_id,
    }


def _port_delete(cloud, id_: str, _outs: dict) -> None:
    cloud.conn.network.delete_port(id_, ignore_missing=True)


PORT = Kind(NETWORK, _port_create, _port_delete, lambda o: " ".join(o.get("allFixedIps") or ()))
SECGROUP = Kind(NETWORK, _secgroup_create, _secgroup_delete)
SECGROUP_RULE = Kind(
    NETWORK,
    _rule_create,
    _rule_delete,
    lambda o: (
        f"{o.get('direction')} {o.get('ethertype')} {o.get('protocol') or 'any'} "
        f"{o.get('remoteIpPrefix') or ''}".strip()
    ),
)


# --- Nova: the monitor server, key pairs, server groups -------------------------------------------

_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def _networks(cloud, wanted: list) -> list[dict]:
    nets = []
    for net in wanted or ():
        if net.get("uuid"):
            nets.append({"uuid": net["uuid"]})
        elif net.get("port"):
            nets.append({"port": net["port"]})
        else:
            found = cloud.conn.network.find_network(net["name"], ignore_missing=False)
            nets.append({"uuid": found.id})
    return nets


def _server_create(cloud, inputs: dict) -> tuple[str, dict]:
    flavor = (
        inputs.get("flavorId")
        or cloud.conn.compute.find_flavor(inputs["flavorName"], ignore_missing=False).id
    )
    attrs: dict[str, Any] = {
        "name": inputs["name"],
        "image_id": inputs["imageId"],
        "flavor_id": flavor,
        "networks": _networks(cloud, inputs.get("networks")),
        "security_groups": [{"name": g} for g in inputs.get("securityGroups") or ()],
        "metadata": inputs.get("metadata") or {},
    }
    if inputs.get("keyPair"):
        attrs["key_name"] = inputs["keyPair"]
    if inputs.get("userData"):  # Nova takes user data base64-encoded; the provider encodes it
        attrs["user_data"] = base64.b64encode(inputs["userData"].encode()).decode()
    if inputs.get("schedulerHints"):
        attrs["scheduler_hints"] = {k: v for h in inputs["schedulerHints"] for k, v in h.items() if v}
    if inputs.get("blockDevices"):  # as the provider sends them: Nova's block_device_mapping_v2
        attrs["block_device_mapping"] = [_block_device(b) for b in inputs["blockDevices"]]
    server = cloud.conn.compute.create_server(**attrs)
    cloud.remember(server.id, {})
    server = cloud.conn.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], wait=300)
    fixed = [
        a["addr"]
        for addrs in (server.addresses or {}).values()
        for a in addrs
        if a.get("OS-EXT-IPS:type", "fixed") == "fixed"
    ]
    return server.id, {
        **inputs,
        "accessIpV4": next((a for a in fixed if ":" not in a), ""),
        "powerState": "active",
    }


_BLOCK_DEVICE_FIELDS = {
    "uuid": "uuid",
    "sourceType": "source_type",
    "destinationType": "destination_type",
    "bootIndex": "boot_index",
    "deleteOnTermination": "delete_on_termination",
    "volumeSize": "volume_size",
    "volumeType": "volume_type",
    "deviceType": "device_type",
    "diskBus": "disk_bus",
    "guestFormat": "guest_format",
}


def _block_device(device: dict) -> dict:
    return {nova: device[wire] for wire, nova in _BLOCK_DEVICE_FIELDS.items() if device.get(wire) is not None}


def _server_delete(cloud, id_: str, _outs: dict) -> None:
    server = cloud.conn.compute.find_server(id_, ignore_missing=True)
    if server is None:
        return
    cloud.conn.compute.delete_server(server)
    cloud.conn.compute.wait_for_delete(server, wait=300)


def _keypair_create(cloud, inputs: dict) -> tuple[str, dict]:
    attrs = {"name": inputs["name"]}
    if inputs.get("publicKey"):
        attrs["public_key"] = inputs["publicKey"]
    kp = cloud.conn.compute.create_keypair(**attrs)
    return kp.name, {
        **inputs,
        "fingerprint": kp.fingerprint,
        "publicKey": kp.public_key,
        "privateKey": kp.private_key or "",
    }


def _keypair_delete(cloud, id_: str, _outs: dict) -> None:
    cloud.conn.compute.delete_keypair(id_, ignore_missing=True)


def _server_group_create(cloud, inputs: dict) -> tuple[str, dict]:
    policies = inputs.get("policies") or []
    group = cloud.conn.compute.create_server_group(
        name=inputs["name"], policy=policies[0] if policies else None
    )
    return group.id, dict(inputs)


def _server_group_delete(cloud, id_: str, _outs: dict) -> None:
    cloud.conn.compute.delete_server_group(id_, ignore_missing=True)


SERVER = Kind(COMPUTE, _server_create, _server_delete, lambda o: o.get("accessIpV4", ""))


# --- Cinder: the broker server's data volume --------------------------------------------------------


def _volume_create(cloud, inputs: dict) -> tuple[str, dict]:
    attrs = {"size": int(inputs["size"]), "name": inputs.get("name") or ""}
    for wire, sdk in (
        ("description", "description"),
        ("volumeType", "volume_type"),
        ("availabilityZone", "availability_zone"),
    ):
        if inputs.get(wire):
            attrs[sdk] = inputs[wire]
    volume = cloud.conn.block_storage.create_volume(**attrs)
    cloud.remember(volume.id, {})
    cloud.conn.block_storage.wait_for_status(volume, status="available", failures=["error"], wait=300)
    return volume.id, dict(inputs)


def _volume_delete(cloud, id_: str, _outs: dict) -> None:
    volume = cloud.conn.block_storage.find_volume(id_, ignore_missing=True)
    if volume is None:
        return
    cloud.conn.block_storage.delete_volume(volume)
    cloud.conn.block_storage.wait_for_delete(volume, wait=300)


VOLUME = Kind(BLOCK_STORAGE, _volume_create, _volume_delete, lambda o: f"{o.get('size')} GB")
KEYPAIR = Kind(COMPUTE, _keypair_create, _keypair_delete)
SERVER_GROUP = Kind(COMPUTE, _server_group_create, _server_group_delete)


# --- the queues: the program's own dynamic provider -------------------------------------------------

PROVIDER_KEY = "__provider"


def _dynamic_provider(inputs: dict):
    """The provider object the program serialized into the resource (as the engine unpickles it)."""
    import dill

    return dill.loads(base64.b64decode(inputs[PROVIDER_KEY]))


def _dynamic_create(cloud, inputs: dict) -> tuple[str, dict]:
    provider = _dynamic_provider(inputs)
    props = {k: v for k, v in inputs.items() if k != PROVIDER_KEY}
    checked = provider.check({}, props)
    if checked.failures:
        raise CreateFailed(
            "the dynamic provider's check refused: "
            + "; ".join(f"{f.property}: {f.reason}" for f in checked.failures)
        )
    made = provider.create(checked.inputs)
    return made.id, {**(made.outs or {}), PROVIDER_KEY: inputs[PROVIDER_KEY]}


def _dynamic_delete(_cloud, id_: str, outs: dict) -> None:
    _dynamic_provider(outs).delete(id_, {k: v for k, v in outs.items() if k != PROVIDER_KEY})


DYNAMIC = Kind(
    MESSAGING,
    _dynamic_create,
    _dynamic_delete,
    lambda o: f"and {o.get('dead_letter_queue')}" if o.get("dead_letter_queue") else "",
)


DYNAMIC_PREFIX = "pulumi-python:dynamic"
KINDS: dict[str, Kind] = {
    "pulumi:providers:openstack": PROVIDER,
    DYNAMIC_PREFIX: DYNAMIC,
    "openstack:identity/applicationCredential:ApplicationCredential": CREDENTIAL,
    "openstack:orchestration/stackV1:StackV1": STACK,
    "openstack:networking/secGroup:SecGroup": SECGROUP,
    "openstack:networking/secGroupRule:SecGroupRule": SECGROUP_RULE,
    "openstack:networking/port:Port": PORT,
    "openstack:blockstorage/volume:Volume": VOLUME,
    "openstack:compute/instance:Instance": SERVER,
    "openstack:compute/keypair:Keypair": KEYPAIR,
    "openstack:compute/serverGroup:ServerGroup": SERVER_GROUP,
}


def kind_of(typ: str, custom: bool) -> Kind:
    """The Kind of type token ``typ``; components (not custom) make nothing in the cloud."""
    if not custom:
        return COMPONENT
    if typ.startswith(DYNAMIC_PREFIX):  # pulumi-python:dynamic:Resource or .../<module>:<name>
        return DYNAMIC
    try:
        return KINDS[typ]
    except KeyError:
        raise UnknownResourceType(typ) from None


# --- invokes ----------------------------------------------------------------------------------------


def get_image(cloud, args: dict) -> dict:
    """``openstack:images/getImage:getImage``: the image Glance holds matching the program's filter."""
    pattern = args.get("nameRegex")
    props = {k: str(v) for k, v in (args.get("properties") or {}).items()}
    found = []
    for image in cloud.conn.image.images():
        if args.get("name") and image.name != args["name"]:
            continue
        if pattern and not re.search(pattern, image.name or ""):
            continue
        have = {
            **(image.properties or {}),
            **{k: getattr(image, k, None) for k in props if hasattr(image, k)},
        }
        if all(str(have.get(k)) == v for k, v in props.items()):
            found.append(image)
    if not found:
        raise LookupError("Your query returned no results. Please change your search criteria and try again.")
    if len(found) > 1 and not args.get("mostRecent"):
        raise LookupError(
            "Your query returned more than one result. Please try a more specific search "
            "criteria, or set `most_recent` attribute to true."
        )
    image = max(found, key=lambda i: i.created_at or "")
    return {
        "id": image.id,
        "name": image.name,
        "properties": dict(image.properties or {}),
        "region": args.get("region"),
        "status": image.status,
        "minDiskGb": image.min_disk or 0,
        "minRamMb": image.min_ram or 0,
    }


def get_network(cloud, args: dict) -> dict:
    """``openstack:networking/getNetwork:getNetwork``: the Neutron network of that name (or id)."""
    wanted = args.get("networkId") or args.get("name")
    network = cloud.conn.network.find_network(wanted, ignore_missing=True) if wanted else None
    if network is None:
        raise LookupError("Your query returned no results. Please change your search criteria and try again.")
    return {
        "id": network.id,
        "name": network.name,
        "subnets": list(network.subnet_ids or ()),
        "external": bool(network.is_router_external),
        "region": args.get("region"),
    }


def get_flavor(cloud, args: dict) -> dict:
    """``openstack:compute/getFlavor:getFlavor``: the Nova flavor of that name, as the provider
    answers it (disk in GB, ram in MB)."""
    flavor = cloud.conn.compute.find_flavor(args.get("name"), ignore_missing=True)
    if flavor is None:
        raise LookupError("Your query returned no results. Please change your search criteria and try again.")
    return {
        "id": flavor.id,
        "name": flavor.name,
        "disk": flavor.disk or 0,
        "ram": flavor.ram or 0,
        "vcpus": flavor.vcpus or 0,
        "region": args.get("region"),
    }

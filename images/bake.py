"""Bake the consumer template image in an OpenStack cloud, and prune old templates.

bake():  key pair + security group (SSH from the baker only) -> builder server -> floating IP
         (when asked) -> ACTIVE -> host key from the console log, pinned -> Fabric steps
         (images/steps.py) -> power off -> createImage with properties -> image active ->
         marked complete -> manifest JSON. The builder, floating IP, key pair and security group
         are deleted on every path (success, error, Ctrl-C); a half-made image is deleted, and if
         even that fails it keeps `qw_bake_state=baking`, which no lookup treats as a template.
prune(): delete all but the newest N complete templates, never one a server or a stack uses.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from images import steps, template
from images.ssh import HostKeyError, host_keys_from_console, pinned_connection

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO_ROOT / "build" / "queue-workers-image.tar"
DEFAULT_MANIFEST = REPO_ROOT / "build" / "template-manifest.json"

# Image properties the bake writes (and the stack's image lookup and prune read).
P_NAME = "qw_template_name"
P_VERSION = "qw_template_version"
P_HASH = "qw_template_hash"
P_STATE = "qw_bake_state"            # baking -> complete; only `complete` is a usable template
P_DIGEST = "qw_workload_image_digest"
P_COMMIT = "qw_git_commit"
P_BASE_ID = "qw_base_image_id"
P_BASE_NAME = "qw_base_image_name"
P_TIME = "qw_bake_time"
P_DOCKER = "qw_docker_method"


class BakeError(RuntimeError):
    """The bake failed; the message says at which step and what the cloud or builder answered."""


@dataclass
class BakeOptions:
    cloud: str | None = None
    region: str | None = None
    base_image: str | None = None          # name or id; default: the template's base_image filter
    flavor: str | None = None
    network: str | None = None             # builder's network (name or id); default: the cloud's
    floating_ip_network: str | None = None  # external network: give the builder a floating IP
    image_archive: Path | None = None      # docker-archive to load (default build/queue-workers-image.tar)
    image_reference: str | None = None     # or a reference the builder pulls
    template_name: str | None = None
    docker_method: str | None = None
    docker_repository: str | None = None   # docker-ce: apt repository (a mirror); default Docker's
    docker_key_fingerprint: str | None = None  # docker-ce: the repository key's; default Docker's
    keep_builder_on_error: bool = False
    force: bool = False
    ssh_port: int = 22
    ssh_source: str | None = None          # CIDR allowed to SSH; default: this machine's address /32
    manifest: Path = DEFAULT_MANIFEST
    timeout: float = 1800.0                # per waiting step (server ACTIVE, console keys, image active)
    poll: float = 2.0
    connection: object = None              # an openstack.connection.Connection (tests); else from cloud/region
    step_hook: object = None               # called with each step's label before it runs (tests inject faults)


@dataclass
class Created:
    """What the bake made in the cloud, so that cleanup knows exactly what to delete."""
    keypair: str | None = None
    security_group: str | None = None
    server: str | None = None
    floating_ip: str | None = None
    image: str | None = None
    image_complete: bool = False
    kept: list[str] = field(default_factory=list)


class Progress:
    """Prints each step with its time; remembers the timings for the manifest."""

    def __init__(self, out=None, hook=None):
        self.out, self.hook, self.timings, self.t0 = out, hook, {}, time.monotonic()

    def __call__(self, label, fn, *args, **kw):
        if self.hook:
            self.hook(label)
        print(f"[bake] {label} ...", file=self.out or sys.stderr, flush=True)
        t = time.monotonic()
        try:
            result = fn(*args, **kw)
        except BaseException:
            print(f"[bake] {label}: FAILED after {time.monotonic() - t:.1f}s", file=self.out or sys.stderr, flush=True)
            raise
        self.timings[label] = round(time.monotonic() - t, 1)
        print(f"[bake] {label}: done in {self.timings[label]:.1f}s", file=self.out or sys.stderr, flush=True)
        return result

    def note(self, msg):
        print(f"[bake] {msg}", file=self.out or sys.stderr, flush=True)


# -- pure helpers -----------------------------------------------------------------------------
def archive_image_id(archive: Path) -> str:
    """The image id (sha256 of its config) inside a docker-archive, as `docker load` will report it."""
    with tarfile.open(archive) as tf:
        member = tf.extractfile("manifest.json")
        if member is None:
            raise BakeError(f"{archive} is not a docker-archive (no manifest.json)")
        manifest = json.load(member)
    config = manifest[0]["Config"]
    digest = Path(config).name.removesuffix(".json")
    digest = digest.split(":")[-1] if ":" in digest else digest
    return f"sha256:{digest}"


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "images", "workload"],
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def local_address_towards(url: str) -> str:
    """This machine's source address towards the cloud's API (a UDP connect sends nothing)."""
    host = urlsplit(url).hostname or "127.0.0.1"
    port = urlsplit(url).port or 443
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((socket.gethostbyname(host), port))
        return s.getsockname()[0]


def make_key(directory: Path) -> tuple[str, str]:
    """A fresh ed25519 key pair for this bake only: (private key path, public key line)."""
    path = directory / "bake_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "queue-workers-bake", "-f", str(path)],
                   check=True)
    return str(path), (directory / "bake_key.pub").read_text().strip()


def template_name(t: template.Template, when: float) -> str:
    return f"{t.name}-v{t.version}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(when))}"


# -- cloud helpers ----------------------------------------------------------------------------
def connect(opts: BakeOptions):
    if opts.connection is not None:
        return opts.connection
    import openstack

    try:
        return openstack.connect(cloud=opts.cloud, region_name=opts.region)
    except Exception as e:  # noqa: BLE001 - openstacksdk raises several config error types
        raise BakeError(f"cannot connect to cloud {opts.cloud or '(OS_* environment)'}: {e}") from e


def _props(img) -> dict:
    return dict(getattr(img, "properties", None) or {})


def complete_templates(conn, name: str | None = None) -> list:
    """Template images (ours, complete), newest first."""
    out = []
    for img in conn.image.images(owner=conn.current_project_id):
        p = _props(img)
        if p.get(P_STATE) == "complete" and P_NAME in p and (name is None or p[P_NAME] == name):
            out.append(img)
    out.sort(key=lambda i: i.created_at or "", reverse=True)
    return out


def find_base_image(conn, t: template.Template, wanted: str | None):
    """The base image: by id, else active images named `wanted` (or the template's filter), newest."""
    if wanted:
        try:
            img = conn.image.get_image(wanted)
            if img.status == "active":
                return img
        except Exception:  # noqa: BLE001 - not an id: look it up by name
            pass
    name = wanted or t.base_image_name
    matches = [i for i in conn.image.images(name=name, status="active")
               if wanted or all(str(_props(i).get(k, getattr(i, k, None))) == str(v)
                                for k, v in t.base_image_properties.items())]
    if not matches:
        filt = f"name={name}" + ("" if wanted else f", properties={t.base_image_properties}")
        raise BakeError(f"no active base image matches {filt}: pass --base-image NAME_OR_ID")
    matches.sort(key=lambda i: i.created_at or "", reverse=True)
    return matches[0]


def _wait(what: str, fn, timeout: float, poll: float):
    """Poll fn() until it returns a truthy value; fn raises to fail early."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BakeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def _server_active(conn, server_id):
    s = conn.compute.get_server(server_id)
    if s.status == "ERROR":
        fault = (getattr(s, "fault", None) or {}).get("message", "no fault message")
        raise BakeError(f"builder server {server_id} went to ERROR: {fault}")
    return s if s.status == "ACTIVE" else None


def _builder_address(server, network_name: str | None, fip_address: str | None) -> str:
    if fip_address:
        return fip_address
    for net, addrs in (server.addresses or {}).items():
        if network_name and net != network_name:
            continue
        for a in addrs:
            if a.get("OS-EXT-IPS:type", "fixed") == "fixed" and a.get("version", 4) == 4:
                return a["addr"]
    raise BakeError(f"builder server has no fixed IPv4 address{' on ' + network_name if network_name else ''}; "
                    "pass --floating-ip-network to reach it through a floating IP")


def _console_keys(conn, server_id):
    out = conn.compute.get_server_console_output(server_id).get("output", "")
    try:
        return host_keys_from_console(out)
    except HostKeyError:
        return None


def _connect_ssh(address, port, user, key_path, keys, timeout, poll):
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = pinned_connection(address, port, user, key_path, keys)
        try:
            c.open()
            return c
        except Exception as e:  # noqa: BLE001 - sshd may not listen yet; a wrong host key never passes
            import paramiko

            c.close()
            if isinstance(e, paramiko.BadHostKeyException) or "not found in known_hosts" in str(e):
                raise BakeError(f"the builder at {address}:{port} offered a host key that is not the one "
                                f"its console log printed: refusing to connect ({e})") from e
            last = e
            time.sleep(poll)
    raise BakeError(f"cannot SSH to the builder at {address}:{port} as {user}: {last}")


def _image_active(conn, image_id):
    img = conn.image.get_image(image_id)
    if img.status in ("killed", "deleted", "deactivated"):
        raise BakeError(f"snapshot image {image_id} ended {img.status}")
    return img if img.status == "active" else None


def _patch_image(conn, image_id: str, props: dict) -> None:
    # Raw JSON patch: openstacksdk's update_image(**props) would also remove every other property.
    ops = [{"op": "add", "path": f"/{k}", "value": str(v)} for k, v in props.items()]
    r = conn.image.patch(f"/images/{image_id}", json=ops,
                         headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})
    if r.status_code >= 400:
        raise BakeError(f"could not set {', '.join(props)} on image {image_id}: {r.status_code} {r.text[:200]}")


def cleanup(conn, created: Created, keep_builder: bool, progress: Progress) -> list[str]:
    """Delete what the bake made; returns what could not be deleted (never raises)."""
    problems = []

    def attempt(label, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - keep deleting the rest, report every failure
            problems.append(f"{label}: {e}")
            progress.note(f"cleanup: {label} FAILED: {e}")

    if created.image and not created.image_complete:
        attempt(f"delete half-made image {created.image}", lambda: conn.image.delete_image(created.image,
                                                                                       ignore_missing=True))
    if keep_builder:
        created.kept = [x for x in (created.server and f"server {created.server}",
                                    created.floating_ip and f"floating IP {created.floating_ip}",
                                    created.security_group and f"security group {created.security_group}",
                                    created.keypair and f"key pair {created.keypair}") if x]
        progress.note("kept for debugging (--keep-builder-on-error): " + ", ".join(created.kept))
        return problems
    if created.server:
        def delete_server():
            conn.compute.delete_server(created.server, ignore_missing=True)
            _wait("the builder server to be deleted",
                  lambda: conn.compute.find_server(created.server, ignore_missing=True) is None, 600, 1)
        attempt(f"delete server {created.server}", delete_server)
    if created.floating_ip:
        attempt(f"delete floating IP {created.floating_ip}",
                lambda: conn.network.delete_ip(created.floating_ip, ignore_missing=True))
    if created.security_group:
        attempt(f"delete security group {created.security_group}",
                lambda: conn.network.delete_security_group(created.security_group, ignore_missing=True))
    if created.keypair:
        attempt(f"delete key pair {created.keypair}",
                lambda: conn.compute.delete_keypair(created.keypair, ignore_missing=True))
    return problems


# -- the bake ---------------------------------------------------------------------------------
def bake(opts: BakeOptions, out=None) -> dict:
    """Bake (or reuse) the template image; returns the manifest (also written to opts.manifest)."""
    t = template.load(docker_method=opts.docker_method, docker_repository=opts.docker_repository,
                      docker_key_fingerprint=opts.docker_key_fingerprint)
    progress = Progress(out, opts.step_hook)
    started = time.time()
    if opts.image_archive and opts.image_reference:
        raise BakeError("give either --image-archive or --image-reference, not both")
    archive = None if opts.image_reference else Path(opts.image_archive or DEFAULT_ARCHIVE)
    if archive is not None and not archive.is_file():
        raise BakeError(f"image archive {archive} does not exist: run `make image` or pass --image-reference")
    digest = archive_image_id(archive) if archive else opts.image_reference
    content_hash = t.content_hash(digest)
    conn = progress("connect", connect, opts)

    if not opts.force:
        existing = [i for i in complete_templates(conn, t.name) if _props(i).get(P_HASH) == content_hash]
        if existing:
            img = existing[0]
            progress.note(f"unchanged content: reusing template {img.name} ({img.id}); --force bakes again")
            manifest = {"reused": True, "template_image_id": img.id, "template_name": img.name,
                        "properties": {k: v for k, v in _props(img).items() if k.startswith("qw_")},
                        "steps": progress.timings}
            _write_manifest(opts.manifest, manifest)
            return manifest

    run_id = uuid.uuid4().hex[:8]
    name = opts.template_name or template_name(t, started)
    created = Created()
    keydir = Path(tempfile.mkdtemp(prefix="qw-bake-"))
    failed: BaseException | None = None
    # Ctrl-C and SIGTERM both end in the cleanup below.
    old_term = None
    if threading_main():
        old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        base = progress("find base image", find_base_image, conn, t, opts.base_image)
        flavor = progress("find flavor", lambda: conn.compute.find_flavor(opts.flavor or t.flavor, ignore_missing=False))
        network = conn.network.find_network(opts.network, ignore_missing=False) if opts.network else None
        ext_net = (conn.network.find_network(opts.floating_ip_network, ignore_missing=False)
                   if opts.floating_ip_network else None)
        key_path, pub = make_key(keydir)
        source = opts.ssh_source or f"{local_address_towards(conn.session.get_endpoint(service_type='compute'))}/32"

        def create_keypair():
            kp = conn.compute.create_keypair(name=f"qw-bake-{run_id}", public_key=pub)
            created.keypair = kp.name
        progress("create key pair", create_keypair)

        def create_security_group():
            sg = conn.network.create_security_group(name=f"qw-bake-{run_id}",
                                                    description="queue-workers bake: SSH from the baker only")
            created.security_group = sg.id
            conn.network.create_security_group_rule(security_group_id=sg.id, direction="ingress", ethertype="IPv4",
                                                    protocol="tcp", port_range_min=opts.ssh_port,
                                                    port_range_max=opts.ssh_port, remote_ip_prefix=source)
            return sg
        sg = progress(f"create security group (SSH from {source})", create_security_group)

        def boot():
            kw = {"name": f"qw-bake-{run_id}", "image_id": base.id, "flavor_id": flavor.id,
                  "key_name": created.keypair, "security_groups": [{"name": sg.name}],
                  "metadata": {"queue-workers": "bake", "qw_bake_run": run_id}}
            if network is not None:
                kw["networks"] = [{"uuid": network.id}]
            srv = conn.compute.create_server(**kw)
            created.server = srv.id
            return _wait("the builder to be ACTIVE", lambda: _server_active(conn, srv.id), opts.timeout, opts.poll)
        server = progress(f"boot builder from {base.name} ({flavor.name})", boot)

        fip_address = None
        if ext_net is not None:
            def floating_ip():
                port = next(iter(conn.network.ports(device_id=created.server)), None)
                if port is None:
                    raise BakeError(f"builder server {created.server} has no port to attach a floating IP to")
                fip = conn.network.create_ip(floating_network_id=ext_net.id, port_id=port.id,
                                             description=f"queue-workers bake {run_id}")
                created.floating_ip = fip.id
                return fip.floating_ip_address
            fip_address = progress(f"floating IP on {ext_net.name}", floating_ip)
        address = _builder_address(server, network.name if network is not None else None, fip_address)

        keys = progress("read SSH host key from the console log",
                        _wait, "cloud-init's SSH host keys on the console",
                        lambda: _console_keys(conn, created.server), opts.timeout, opts.poll)
        c = progress(f"SSH to {t.login_user}@{address}:{opts.ssh_port} (host key pinned)", _connect_ssh,
                     address, opts.ssh_port, t.login_user, key_path, keys, min(opts.timeout, 300), opts.poll)
        try:
            facts = steps.run_all(c, t, pub, archive=archive, reference=opts.image_reference, progress=progress)
        finally:
            c.close()

        def power_off():
            conn.compute.stop_server(created.server)
            _wait("the builder to power off", lambda: conn.compute.get_server(created.server).status == "SHUTOFF",
                  opts.timeout, opts.poll)
        progress("power off builder", power_off)

        bake_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        props = {P_NAME: t.name, P_VERSION: str(t.version), P_HASH: content_hash, P_STATE: "baking",
                 P_DIGEST: facts["workload_image_id"] if archive else digest, P_COMMIT: git_commit(),
                 P_BASE_ID: base.id, P_BASE_NAME: base.name, P_TIME: bake_time, P_DOCKER: t.docker_method}

        def snapshot():
            image_id = conn.compute.create_server_image(created.server, name=name, metadata=props, wait=False)
            created.image = image_id if isinstance(image_id, str) else image_id.id
            _wait("the template image to be active", lambda: _image_active(conn, created.image),
                  opts.timeout, opts.poll)
        progress(f"snapshot as {name}", snapshot)
        progress("mark template complete", _patch_image, conn, created.image, {P_STATE: "complete"})
        created.image_complete = True
    except BaseException as e:  # noqa: BLE001 - Ctrl-C too: clean up, then re-raise
        failed = e
        raise
    finally:
        problems = cleanup(conn, created, bool(failed) and opts.keep_builder_on_error, progress)
        shutil.rmtree(keydir, ignore_errors=True)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if failed is not None:
            progress.note(f"bake FAILED ({type(failed).__name__}: {failed}); "
                          + ("cleanup incomplete: " + "; ".join(problems) if problems
                             else "everything it created was removed"))
        elif problems:
            raise BakeError("template baked, but cleanup left: " + "; ".join(problems))

    img = conn.image.get_image(created.image)
    manifest = {"reused": False, "template_image_id": img.id, "template_name": img.name,
                "properties": {k: v for k, v in _props(img).items() if k.startswith("qw_")},
                "base_image": {"id": base.id, "name": base.name}, "flavor": flavor.name,
                "docker_version": facts["docker_version"], "steps": progress.timings,
                "total_seconds": round(time.time() - started, 1)}
    _write_manifest(opts.manifest, manifest)
    progress.note(f"template {img.name} ({img.id}) ready in {manifest['total_seconds']:.0f}s; "
                  f"manifest {opts.manifest}")
    return manifest


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _write_manifest(path: Path, manifest: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# -- prune ------------------------------------------------------------------------------------
def images_in_use(conn) -> tuple[dict[str, str], list[str]]:
    """Image ids (and names) that servers boot or Heat stacks name, each with who uses it
    (``server NAME`` / ``stack NAME``); plus notes on what was checked."""
    import openstack.exceptions

    used: dict[str, str] = {}
    notes = []
    for s in conn.compute.servers(details=True):
        img = s.image or {}
        image_id = img.get("id") if isinstance(img, dict) else getattr(img, "id", None)
        if image_id:
            used.setdefault(image_id, f"server {s.name}")
    notes.append("servers checked")
    try:
        conn.session.get_endpoint(service_type="orchestration", interface="public")
    except Exception:  # noqa: BLE001 - no orchestration service in the catalog
        notes.append("no orchestration service: stacks not checked (servers were)")
        return used, notes
    # The list carries no parameters, and a template names its image by `get_param`: read each
    # stack (nested ones too: a scaling group's member template has the id written out).
    for listed in conn.orchestration.stacks(show_nested=True):
        try:
            st = conn.orchestration.get_stack(listed.id, resolve_outputs=False)
            if st is None:  # deleted since the list: it uses nothing any more
                continue
            values = [str(v) for v in (st.parameters or {}).values()]
            values += _strings(conn.orchestration.get_stack_template(st))
        except openstack.exceptions.NotFoundException:
            continue
        except Exception as e:  # noqa: BLE001 - a stack we cannot read might use any image
            raise BakeError(f"cannot read stack {listed.name}: {e}; not pruning") from e
        for v in values:
            used.setdefault(v, f"stack {listed.name}")
    notes.append("stacks checked")
    return used, notes


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def prune(conn, keep: int, name: str | None = None, dry_run: bool = False, out=None) -> dict:
    """Delete all but the newest `keep` complete templates and every abandoned half-made one,
    except images a server or a stack uses. Returns {"deleted": [...], "kept": [...], "in_use": [...]}."""
    if keep < 1:
        raise BakeError(f"--keep {keep}: keep at least 1 template")
    t = template.load()
    name = name or t.name
    ours = [i for i in conn.image.images(owner=conn.current_project_id) if _props(i).get(P_NAME) == name]
    complete = sorted([i for i in ours if _props(i).get(P_STATE) == "complete"],
                      key=lambda i: i.created_at or "", reverse=True)
    half = [i for i in ours if _props(i).get(P_STATE) != "complete" and i.status != "saving"
            and i.status != "queued"]
    out = out or sys.stderr
    used, notes = images_in_use(conn)
    result = {"kept": [i.name for i in complete[:keep]], "deleted": [], "in_use": [], "checked": notes}
    for img in complete[keep:] + half:
        user = used.get(img.id) or used.get(img.name)
        if user:
            result["in_use"].append(img.name)
            print(f"[prune] keeping {img.name} ({img.id}): in use by {user}", file=out)
            continue
        print(f"[prune] {'would delete' if dry_run else 'deleting'} {img.name} ({img.id})", file=out)
        if not dry_run:
            conn.image.delete_image(img.id, ignore_missing=True)
        result["deleted"].append(img.name)
    return result

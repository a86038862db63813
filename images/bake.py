"""Bake the consumer template image in an OpenStack cloud, and prune old templates.

bake():  key pair + security group (SSH from the baker only) -> builder server -> floating IP
         (when asked) -> ACTIVE -> host key from the console log, pinned -> Fabric steps
         (images/steps.py) -> power off -> createImage with properties -> image active ->
         marked complete -> manifest JSON. The builder, floating IP, key pair and security group
         are deleted on every path (success, error, Ctrl-C); a half-made image is deleted, and if
         even that fails it keeps `qw_bake_state=baking`, which no lookup treats as a template.
prune() (images/prune.py): delete all but the newest N complete templates, never one a server or
a stack uses.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from images import steps, template
from images.ssh import HostKeyError, host_keys_from_console, pinned_connection
from workload.error_text import not_allowed

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO_ROOT / "build" / "queue-workers-image.tar"
DEFAULT_MANIFEST = REPO_ROOT / "build" / "template-manifest.json"

# Image properties the bake writes (and the stack's image lookup and prune read).
from images.properties import (  # noqa: E402 (re-exported: the tests and fab tasks use bake.P_*)
    P_BASE_ID,
    P_BASE_NAME,
    P_COMMIT,
    P_DIGEST,
    P_DOCKER,
    P_EXTRA,
    P_HASH,
    P_NAME,
    P_STATE,
    P_TIME,
    P_VERSION,
    STATE_BAKING,
    STATE_COMPLETE,
)


class BakeError(RuntimeError):
    """The bake failed; the message says at which step and what the cloud or builder answered."""


def _cli(default, help: str, convert=None, cli_default=None, repeatable: bool = False):
    """A BakeOptions field that is an option of `fab bake-template` (``help`` is its --help line;
    ``convert`` turns the command line's text into the field's type; ``repeatable``: the option
    may be given more than once, and the task hands over the list)."""
    return field(
        default=default,
        metadata={"help": help, "convert": convert, "cli_default": cli_default, "repeatable": repeatable},
    )


def _path(value):
    return Path(value) if value else None


def _paths(values) -> tuple[Path, ...]:
    return tuple(Path(v) for v in values if v)


def _number(kind: type, lo: float, hi: float, allowed: str):
    """A converter of the command line's text to a ``kind`` from ``lo`` to ``hi`` (``lo`` itself
    excluded for a float); ValueError(``allowed``) otherwise, which :meth:`BakeOptions.from_cli`
    words as ``--flag=value is not allowed: allowed``."""

    def convert(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise ValueError(allowed) from None
        if not (lo < value if kind is float else lo <= value) or value > hi:
            raise ValueError(allowed)
        return value

    return convert


@dataclass
class BakeOptions:
    """Everything a bake can be told; the fields with help are `fab bake-template`'s options
    (images/tasks.py builds the task's signature and --help from them)."""

    cloud: str | None = _cli(None, "cloud name in clouds.yaml (default: $OS_CLOUD, or the OS_* environment)")
    region: str | None = _cli(None, "region to bake in (default: the cloud's region_name)")
    base_image: str | None = _cli(
        None,
        "base image name or id (default: the template's filter: debian-12 with os_distro=debian, newest)",
    )
    flavor: str | None = _cli(None, "builder flavor (default: the template's, m1.small)")
    network: str | None = _cli(
        None, "network (name or id) for the builder's port (default: the cloud's default network)"
    )
    floating_ip_network: str | None = _cli(
        None,
        "external network: give the builder a floating IP from it (when "
        "its fixed address is not reachable from here)",
    )
    image_archive: Path | None = _cli(
        None,
        "docker-archive of the workload image to load (default: "
        "build/queue-workers-image.tar, made by `make image`)",
        _path,
    )
    image_reference: str | None = _cli(
        None, "instead of an archive, an image reference the builder pulls (e.g. a registry tag)"
    )
    extra_image: tuple[Path, ...] = _cli(
        (),
        "docker-archive of a further container image to load into the template (repeatable), for "
        "a cloud that cannot pull it: e.g. build/rabbitmq-image.tar (python -m "
        "devenv.builder.rabbitmq_image) for the broker server's amqpBrokerImage; recorded in the "
        "template's properties (qw_extra_images) and content hash",
        _paths,
        repeatable=True,
    )
    template_name: str | None = _cli(
        None, "name of the template image (default: queue-workers-consumer-v<version>-<UTC time>)"
    )
    docker_method: str | None = _cli(
        None,
        "how Docker is installed: distro (Debian's docker.io) or docker-ce "
        "(Docker's apt repository); default: the template's",
    )
    docker_repository: str | None = _cli(
        None,
        "with docker-ce: the apt repository to install from, e.g. a mirror "
        "of Docker's (default: the template's, "
        "https://download.docker.com/linux/debian)",
    )
    docker_key_fingerprint: str | None = _cli(
        None,
        "with docker-ce: fingerprint of the key the repository signs "
        "with; its <repository>/gpg must be that key (default: Docker's, "
        "9DC8 5822 9FC7 DD38 854A E2D8 8D81 803C 0EBF CD88)",
    )
    keep_builder_on_error: bool = _cli(
        False,
        "on failure, keep the builder server, floating IP, key pair and "
        "security group for debugging (a half-made image is still deleted)",
        cli_default=False,
    )
    force: bool = _cli(
        False, "bake even if a complete template with the same content already exists", cli_default=False
    )
    ssh_port: int = _cli(
        22,
        "port the builder's sshd listens on (default 22)",
        _number(int, 1, 65535, "a port number from 1 to 65535"),
    )
    ssh_source: str | None = _cli(
        None, "CIDR allowed to SSH to the builder (default: this machine's address towards the cloud, /32)"
    )
    manifest: Path = _cli(
        DEFAULT_MANIFEST,
        "where to write the manifest JSON (default: build/template-manifest.json)",
        lambda v: Path(v) if v else DEFAULT_MANIFEST,
    )
    timeout: float = _cli(
        1800.0,
        "seconds to wait for each of: server ACTIVE, console host keys, image active (default 1800)",
        _number(float, 0, 86400, "a number of seconds above 0 and at most 86400"),
    )
    poll: float = 2.0
    connection: object = None  # an openstack.connection.Connection (tests); else from cloud/region
    step_hook: object = None  # called with each step's label before it runs (tests inject faults)

    @classmethod
    def cli_fields(cls) -> list:
        """The fields that are `fab bake-template` options."""
        return [f for f in fields(cls) if "help" in f.metadata]

    @classmethod
    def from_cli(cls, given: dict) -> BakeOptions:
        """Options from the task's keyword arguments (the command line's values, converted);
        ValueError ``--flag=value is not allowed: ...`` for one out of its range."""
        values = {}
        for f in cls.cli_fields():
            value = given.get(f.name, f.metadata["cli_default"])
            if value is None:  # not given (a number's task default is None: fab passes its text)
                values[f.name] = f.default
                continue
            convert = f.metadata["convert"]
            try:
                values[f.name] = convert(value) if convert else value
            except ValueError as exc:
                raise ValueError(not_allowed("--" + f.name.replace("_", "-"), value, str(exc))) from None
        return cls(**values)


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
            print(
                f"[bake] {label}: FAILED after {time.monotonic() - t:.1f}s",
                file=self.out or sys.stderr,
                flush=True,
            )
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


def extra_images_property(loaded: list[dict]) -> str:
    """The qw_extra_images property: ``tag@<12 hex of the id>`` of each loaded image, comma-separated
    (a Glance property holds at most 255 characters; the full ids are in the manifest)."""
    value = ",".join(
        f"{','.join(i['tags']) or '<untagged>'}@{i['image_id'].removeprefix('sha256:')[:12]}" for i in loaded
    )
    if len(value) > 255:
        raise BakeError(
            f"the extra images' record ({len(value)} characters) does not fit a Glance property (255): "
            "load fewer or shorter-named images"
        )
    return value


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "images", "workload"],
            capture_output=True,
            text=True,
        ).stdout.strip()
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
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "queue-workers-bake", "-f", str(path)],
        check=True,
    )
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
    except Exception as e:
        raise BakeError(f"cannot connect to cloud {opts.cloud or '(OS_* environment)'}: {e}") from e


def _props(img) -> dict:
    return dict(getattr(img, "properties", None) or {})


def complete_templates(conn, name: str | None = None) -> list:
    """Template images (ours, complete), newest first."""
    out = []
    for img in conn.image.images(owner=conn.current_project_id):
        p = _props(img)
        if p.get(P_STATE) == STATE_COMPLETE and P_NAME in p and (name is None or p[P_NAME] == name):
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
    matches = [
        i
        for i in conn.image.images(name=name, status="active")
        if wanted
        or all(
            str(_props(i).get(k, getattr(i, k, None))) == str(v) for k, v in t.base_image_properties.items()
        )
    ]
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
    raise BakeError(
        f"builder server has no fixed IPv4 address{' on ' + network_name if network_name else ''}; "
        "pass --floating-ip-network to reach it through a floating IP"
    )


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
        except Exception as e:
            import paramiko

            c.close()
            if isinstance(e, paramiko.BadHostKeyException) or "not found in known_hosts" in str(e):
                raise BakeError(
                    f"the builder at {address}:{port} offered a host key that is not the one "
                    f"its console log printed: refusing to connect ({e})"
                ) from e
            last = e
            time.sleep(poll)
    raise BakeError(f"cannot SSH to the builder at {address}:{port} as {user}: {last}")


def _image_active(conn, image_id):
    img = conn.image.find_image(image_id, ignore_missing=True)
    if img is None:  # Nova deletes the image of a snapshot that failed on the hypervisor
        raise BakeError(f"snapshot image {image_id} was deleted: the cloud's snapshot of the builder failed")
    if img.status in ("killed", "deleted", "deactivated"):
        raise BakeError(f"snapshot image {image_id} ended {img.status}")
    return img if img.status == "active" else None


def _patch_image(conn, image_id: str, props: dict) -> None:
    # Raw JSON patch: openstacksdk's update_image(**props) would also remove every other property.
    ops = [{"op": "add", "path": f"/{k}", "value": str(v)} for k, v in props.items()]
    r = conn.image.patch(
        f"/images/{image_id}",
        json=ops,
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    if r.status_code >= 400:
        raise BakeError(
            f"could not set {', '.join(props)} on image {image_id}: {r.status_code} {r.text[:200]}"
        )


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
        attempt(
            f"delete half-made image {created.image}",
            lambda: conn.image.delete_image(created.image, ignore_missing=True),
        )
    if keep_builder:
        created.kept = [
            x
            for x in (
                created.server and f"server {created.server}",
                created.floating_ip and f"floating IP {created.floating_ip}",
                created.security_group and f"security group {created.security_group}",
                created.keypair and f"key pair {created.keypair}",
            )
            if x
        ]
        progress.note("kept for debugging (--keep-builder-on-error): " + ", ".join(created.kept))
        return problems
    if created.server:

        def delete_server():
            conn.compute.delete_server(created.server, ignore_missing=True)
            _wait(
                "the builder server to be deleted",
                lambda: conn.compute.find_server(created.server, ignore_missing=True) is None,
                600,
                1,
            )

        attempt(f"delete server {created.server}", delete_server)
    if created.floating_ip:
        attempt(
            f"delete floating IP {created.floating_ip}",
            lambda: conn.network.delete_ip(created.floating_ip, ignore_missing=True),
        )
    if created.security_group:
        attempt(
            f"delete security group {created.security_group}",
            lambda: conn.network.delete_security_group(created.security_group, ignore_missing=True),
        )
    if created.keypair:
        attempt(
            f"delete key pair {created.keypair}",
            lambda: conn.compute.delete_keypair(created.keypair, ignore_missing=True),
        )
    return problems


# -- the bake ---------------------------------------------------------------------------------
class Bake:
    """One bake of the template image, one method per step, in the order :meth:`run` calls them.

    Each step records what it made in ``self.created`` before it can fail, so :meth:`cleaning_up`
    deletes exactly that on every path (success, error, Ctrl-C, SIGTERM).
    """

    def __init__(self, opts: BakeOptions, out=None):
        self.opts = opts
        self.t = template.load(
            docker_method=opts.docker_method,
            docker_repository=opts.docker_repository,
            docker_key_fingerprint=opts.docker_key_fingerprint,
        )
        self.progress = Progress(out, opts.step_hook)
        self.started = time.time()
        self.run_id = uuid.uuid4().hex[:8]
        self.name = opts.template_name or template_name(self.t, self.started)
        self.created = Created()

    def run(self) -> dict:
        """Bake (or reuse) the template image; returns the manifest (also written to opts.manifest)."""
        self.archive, self.digest = self.workload_image()
        self.extra = self.extra_images()
        self.content_hash = self.t.content_hash(self.digest, tuple(i for _, i in self.extra))
        self.conn = self.progress("connect", connect, self.opts)
        reused = None if self.opts.force else self.reuse_unchanged()
        if reused is not None:
            return reused
        with self.cleaning_up():
            self.find_base_and_flavor()
            self.create_key_pair()
            self.create_security_group()
            self.boot_builder()
            self.attach_floating_ip()
            self.run_steps_over_ssh()
            self.power_off()
            self.snapshot()
        return self.write_manifest()

    # -- before anything is created ------------------------------------------------------------
    def workload_image(self) -> tuple[Path | None, str]:
        """The docker-archive to load (or None for a reference) and the workload image's digest."""
        opts = self.opts
        if opts.image_archive and opts.image_reference:
            raise BakeError("give either --image-archive or --image-reference, not both")
        if opts.image_reference:
            return None, opts.image_reference
        archive = Path(opts.image_archive or DEFAULT_ARCHIVE)
        if not archive.is_file():
            raise BakeError(
                f"image archive {archive} does not exist: run `make image` or pass --image-reference"
            )
        return archive, archive_image_id(archive)

    def extra_images(self) -> list[tuple[Path, str]]:
        """(archive, image id) of each ``--extra-image``, checked before anything is created."""
        out = []
        for archive in self.opts.extra_image:
            archive = Path(archive)
            if not archive.is_file():
                raise BakeError(f"extra image archive {archive} does not exist")
            out.append((archive, archive_image_id(archive)))
        return out

    def reuse_unchanged(self) -> dict | None:
        """The manifest of a complete template with the same content, if there is one."""
        existing = [
            i
            for i in complete_templates(self.conn, self.t.name)
            if _props(i).get(P_HASH) == self.content_hash
        ]
        if not existing:
            return None
        img = existing[0]
        self.progress.note(f"unchanged content: reusing template {img.name} ({img.id}); --force bakes again")
        manifest = {
            "reused": True,
            "template_image_id": img.id,
            "template_name": img.name,
            "properties": {k: v for k, v in _props(img).items() if k.startswith("qw_")},
            "steps": self.progress.timings,
        }
        _write_manifest(self.opts.manifest, manifest)
        return manifest

    @contextlib.contextmanager
    def cleaning_up(self):
        """Delete what the bake created on every way out; Ctrl-C and SIGTERM both end here."""
        self.keydir = Path(tempfile.mkdtemp(prefix="qw-bake-"))
        old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if threading_main() else None
        failed: BaseException | None = None
        try:
            yield
        except BaseException as e:
            failed = e
            raise
        finally:
            problems = cleanup(
                self.conn, self.created, bool(failed) and self.opts.keep_builder_on_error, self.progress
            )
            shutil.rmtree(self.keydir, ignore_errors=True)
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            if failed is not None:
                self.progress.note(
                    f"bake FAILED ({type(failed).__name__}: {failed}); "
                    + (
                        "cleanup incomplete: " + "; ".join(problems)
                        if problems
                        else "everything it created was removed"
                    )
                )
            elif problems:
                raise BakeError("template baked, but cleanup left: " + "; ".join(problems))

    @contextlib.contextmanager
    def adopt_on_error(self, what: str, lookup):
        """If a create request fails, the cloud may still have made the thing (its answer was
        lost): record what ``lookup()`` finds as ``self.created.<what>``, so cleanup deletes it."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                found = lookup()
                if found is not None:
                    setattr(self.created, what, found.id)
            raise

    # -- the builder ---------------------------------------------------------------------------
    def find_base_and_flavor(self) -> None:
        conn, opts = self.conn, self.opts
        self.base = self.progress("find base image", find_base_image, conn, self.t, opts.base_image)
        self.flavor = self.progress(
            "find flavor",
            lambda: conn.compute.find_flavor(opts.flavor or self.t.flavor, ignore_missing=False),
        )
        self.network = conn.network.find_network(opts.network, ignore_missing=False) if opts.network else None
        self.ext_net = (
            conn.network.find_network(opts.floating_ip_network, ignore_missing=False)
            if opts.floating_ip_network
            else None
        )

    def create_key_pair(self) -> None:
        """A key pair for this bake only (the private half stays in a temporary folder)."""
        self.key_path, self.public_key = make_key(self.keydir)

        def create():
            # Recorded before the request: if its answer is lost, Nova may have made it all the same.
            self.created.keypair = f"qw-bake-{self.run_id}"
            self.conn.compute.create_keypair(name=self.created.keypair, public_key=self.public_key)

        self.progress("create key pair", create)

    def create_security_group(self) -> None:
        """SSH from this machine only (or --ssh-source)."""
        conn, opts = self.conn, self.opts
        source = (
            opts.ssh_source
            or f"{local_address_towards(conn.session.get_endpoint(service_type='compute'))}/32"
        )

        def create():
            with self.adopt_on_error(
                "security_group",
                lambda: conn.network.find_security_group(
                    f"qw-bake-{self.run_id}", project_id=conn.current_project_id
                ),
            ):
                sg = conn.network.create_security_group(
                    name=f"qw-bake-{self.run_id}", description="queue-workers bake: SSH from the baker only"
                )
            self.created.security_group = sg.id
            conn.network.create_security_group_rule(
                security_group_id=sg.id,
                direction="ingress",
                ethertype="IPv4",
                protocol="tcp",
                port_range_min=opts.ssh_port,
                port_range_max=opts.ssh_port,
                remote_ip_prefix=source,
            )
            return sg

        self.security_group = self.progress(f"create security group (SSH from {source})", create)

    def boot_builder(self) -> None:
        conn, opts = self.conn, self.opts

        def boot():
            kw = {
                "name": f"qw-bake-{self.run_id}",
                "image_id": self.base.id,
                "flavor_id": self.flavor.id,
                "key_name": self.created.keypair,
                "security_groups": [{"name": self.security_group.name}],
                "metadata": {"queue-workers": "bake", "qw_bake_run": self.run_id},
            }
            if self.network is not None:
                kw["networks"] = [{"uuid": self.network.id}]
            with self.adopt_on_error("server", lambda: conn.compute.find_server(kw["name"])):
                srv = conn.compute.create_server(**kw)
            self.created.server = srv.id
            return _wait(
                "the builder to be ACTIVE", lambda: _server_active(conn, srv.id), opts.timeout, opts.poll
            )

        self.server = self.progress(f"boot builder from {self.base.name} ({self.flavor.name})", boot)

    def attach_floating_ip(self) -> None:
        """With --floating-ip-network, a floating IP; either way, the address to SSH to."""
        fip_address = None
        ext_net = self.ext_net  # a local, so the closure below sees it narrowed to a network
        if ext_net is not None:

            def floating_ip():
                port = next(iter(self.conn.network.ports(device_id=self.created.server)), None)
                if port is None:
                    raise BakeError(
                        f"builder server {self.created.server} has no port to attach a floating IP to"
                    )
                with self.adopt_on_error(
                    "floating_ip", lambda: next(iter(self.conn.network.ips(port_id=port.id)), None)
                ):
                    fip = self.conn.network.create_ip(
                        floating_network_id=ext_net.id,
                        port_id=port.id,
                        description=f"queue-workers bake {self.run_id}",
                    )
                self.created.floating_ip = fip.id
                return fip.floating_ip_address

            fip_address = self.progress(f"floating IP on {ext_net.name}", floating_ip)
        self.address = _builder_address(
            self.server, self.network.name if self.network is not None else None, fip_address
        )

    def run_steps_over_ssh(self) -> None:
        """Pin the host key the console printed, SSH in, run the Fabric steps (images/steps.py)."""
        conn, opts, t = self.conn, self.opts, self.t
        keys = self.progress(
            "read SSH host key from the console log",
            _wait,
            "cloud-init's SSH host keys on the console",
            lambda: _console_keys(conn, self.created.server),
            opts.timeout,
            opts.poll,
        )
        c = self.progress(
            f"SSH to {t.login_user}@{self.address}:{opts.ssh_port} (host key pinned)",
            _connect_ssh,
            self.address,
            opts.ssh_port,
            t.login_user,
            self.key_path,
            keys,
            min(opts.timeout, 300),
            opts.poll,
        )
        try:
            self.facts = steps.run_all(
                c,
                t,
                self.public_key,
                archive=self.archive,
                reference=opts.image_reference,
                extra_archives=[a for a, _ in self.extra],
                progress=self.progress,
            )
        finally:
            c.close()

    def power_off(self) -> None:
        conn, opts = self.conn, self.opts

        def stop():
            conn.compute.stop_server(self.created.server)
            _wait(
                "the builder to power off",
                lambda: conn.compute.get_server(self.created.server).status == "SHUTOFF",
                opts.timeout,
                opts.poll,
            )

        self.progress("power off builder", stop)

    # -- the template image --------------------------------------------------------------------
    def properties(self) -> dict:
        """What the image records about its bake; ``baking`` until it is marked complete."""
        t, base = self.t, self.base
        return {
            P_NAME: t.name,
            P_VERSION: str(t.version),
            P_HASH: self.content_hash,
            P_STATE: STATE_BAKING,
            P_DIGEST: self.facts["workload_image_id"] if self.archive else self.digest,
            P_COMMIT: git_commit(),
            P_BASE_ID: base.id,
            P_BASE_NAME: base.name,
            P_TIME: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            P_DOCKER: t.docker_method,
            **({P_EXTRA: extra_images_property(self.facts["extra_images"])} if self.extra else {}),
        }

    def snapshot(self) -> None:
        """createImage, wait for it to be active, then mark it complete (only then a template)."""
        conn, opts, props = self.conn, self.opts, self.properties()

        def create():
            with self.adopt_on_error(
                "image",
                lambda: next(iter(conn.image.images(name=self.name, owner=conn.current_project_id)), None),
            ):
                image_id = conn.compute.create_server_image(
                    self.created.server, name=self.name, metadata=props, wait=False
                )
            self.created.image = image_id if isinstance(image_id, str) else image_id.id
            _wait(
                "the template image to be active",
                lambda: _image_active(conn, self.created.image),
                opts.timeout,
                opts.poll,
            )

        self.progress(f"snapshot as {self.name}", create)
        self.progress(
            "mark template complete", _patch_image, conn, self.created.image, {P_STATE: STATE_COMPLETE}
        )
        self.created.image_complete = True

    def write_manifest(self) -> dict:
        img = self.conn.image.get_image(self.created.image)
        manifest = {
            "reused": False,
            "template_image_id": img.id,
            "template_name": img.name,
            "properties": {k: v for k, v in _props(img).items() if k.startswith("qw_")},
            "base_image": {"id": self.base.id, "name": self.base.name},
            "flavor": self.flavor.name,
            "docker_version": self.facts["docker_version"],
            "extra_images": self.facts["extra_images"],
            "steps": self.progress.timings,
            "total_seconds": round(time.time() - self.started, 1),
        }
        _write_manifest(self.opts.manifest, manifest)
        self.progress.note(
            f"template {img.name} ({img.id}) ready in {manifest['total_seconds']:.0f}s; "
            f"manifest {self.opts.manifest}"
        )
        return manifest


def bake(opts: BakeOptions, out=None) -> dict:
    """Bake (or reuse) the template image; returns the manifest (also written to opts.manifest)."""
    return Bake(opts, out).run()


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _write_manifest(path: Path, manifest: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

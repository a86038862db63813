"""The bake steps: functions over a Fabric Connection to the builder server.

Each step is idempotent and checks its own result, raising StepError with what it saw. They run
the same on a cloud builder and on the local builder host (devenv/builder). Where systemd is not
PID 1 (the chroot builder host), services cannot start: `docker_running` says so and the
steps that need the daemon say so too.
"""

from __future__ import annotations

import io
import json
import shlex
import time
from pathlib import Path

from fabric import Connection

from images.template import Template

IMAGE_ENV = "/etc/queue-workers/image.env"
REMOTE_ARCHIVE = "/var/tmp/queue-workers-image.tar"


class StepError(RuntimeError):
    """A bake step did not reach its result."""


def _sudo(c: Connection, cmd: str, **kw):
    # c.sudo("a && b") runs only `a` as root: always hand sudo one shell.
    kw.setdefault("hide", True)
    return c.sudo(f"sh -c {shlex.quote(cmd)}", **kw)


def _put_root(c: Connection, content: str, path: str, mode: str = "0644") -> None:
    """Write a file as root (upload as the login user, then install)."""
    tmp = f".qw-{Path(path).name}.upload"  # in the login user's home, not a shared /tmp
    c.put(io.BytesIO(content.encode()), tmp)
    _sudo(c, f"install -D -o root -g root -m {mode} {tmp} {shlex.quote(path)} && rm -f {tmp}")


def systemd_running(c: Connection) -> bool:
    return c.run("test -d /run/systemd/system", warn=True, hide=True).ok


def wait_for_cloud_init(c: Connection) -> str:
    """Let cloud-init finish first boot (it holds apt's lock); no cloud-init: nothing to wait for."""
    if not c.run("command -v cloud-init", warn=True, hide=True).ok:
        return "no cloud-init"
    r = _sudo(c, "cloud-init status --wait", warn=True)
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "done"


def apt_install(c: Connection, packages: list[str]) -> None:
    if not packages:
        return
    pk = " ".join(shlex.quote(p) for p in packages)
    _sudo(
        c,
        f"export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && "
        f"apt-get install -y -qq --no-install-recommends {pk}",
        timeout=900,
    )
    missing = [
        p
        for p in packages
        if not c.run(
            f"dpkg-query -W -f='${{Status}}' {shlex.quote(p)} | grep -q 'install ok installed'",
            warn=True,
            hide=True,
        ).ok
    ]
    if missing:
        raise StepError(f"packages not installed after apt-get: {', '.join(missing)}")


def install_docker(c: Connection, t: Template) -> str:
    """Install Docker by the template's method, place daemon.json, enable the service.

    Returns the installed `docker --version`."""
    _put_root(c, t.daemon_json, "/etc/docker/daemon.json")
    if t.docker_method == "distro":
        apt_install(c, ["docker.io"])
    else:
        add_docker_repository(c, t)
        apt_install(c, ["docker-ce", "docker-ce-cli", "containerd.io"])
    _sudo(
        c,
        "systemctl enable docker.service containerd.service >/dev/null 2>&1 || systemctl enable docker.service",
    )
    if systemd_running(c):
        _sudo(c, "systemctl restart docker.service", timeout=120)
    cfg = json.loads(_sudo(c, "cat /etc/docker/daemon.json").stdout)
    if cfg.get("log-opts", {}).get("max-size") is None:
        raise StepError("/etc/docker/daemon.json has no log rotation (log-opts.max-size)")
    return c.run("docker --version", hide=True).stdout.strip()


DOCKER_KEYRING = "/etc/apt/keyrings/docker.gpg"
DOCKER_SOURCE = "/etc/apt/sources.list.d/docker.list"


def add_docker_repository(c: Connection, t: Template) -> None:
    """Docker's apt repository as its install guide adds it, with the signing key checked first.

    The key at ``<repository>/gpg`` is used only if its fingerprint is the template's
    ``docker.docker_ce_key_fingerprint`` (Docker's published one by default); apt then accepts
    only packages signed by it (``signed-by``), for this machine's architecture."""
    repo = t.docker_ce_repository.rstrip("/")
    staged = f"{DOCKER_KEYRING}.download"
    _sudo(
        c,
        f"install -d -m 0755 /etc/apt/keyrings && curl -fsSL {shlex.quote(repo + '/gpg')} -o {staged}",
        timeout=120,
    )
    colons = _sudo(c, f"gpg --batch --with-colons --show-keys {staged}", warn=True).stdout
    found = [line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:")]
    if t.docker_ce_key_fingerprint not in found:
        _sudo(c, f"rm -f {staged}")
        raise StepError(
            f"the key at {repo}/gpg has fingerprint {', '.join(found) or '(none: not an OpenPGP key)'}; "
            f"the template trusts only {t.docker_ce_key_fingerprint} (docker.docker_ce_key_fingerprint, "
            "or --docker-key-fingerprint)"
        )
    _sudo(
        c,
        f"gpg --batch --yes --dearmor -o {DOCKER_KEYRING} {staged} && rm -f {staged} && chmod a+r {DOCKER_KEYRING}",
    )
    arch = c.run("dpkg --print-architecture", hide=True).stdout.strip()
    _put_root(
        c, f"deb [arch={arch} signed-by={DOCKER_KEYRING}] {repo} {t.docker_ce_suite} stable\n", DOCKER_SOURCE
    )


def docker_running(c: Connection, wait: float = 0) -> bool:
    """Whether the Docker daemon answers, waiting up to `wait` seconds for it to come up."""
    deadline = time.monotonic() + wait
    while True:
        if _sudo(c, "docker info --format '{{.ServerVersion}}'", warn=True).ok:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1)


def load_image(c: Connection, t: Template, archive: Path | None = None, reference: str | None = None) -> str:
    """Put the workload image on the builder: `docker load` an archive, or `docker pull` a reference.

    Returns the image id (sha256:...) of the template's workload image."""
    if not docker_running(c, wait=60):
        raise StepError("the Docker daemon is not running on the builder: cannot load the workload image")
    if archive is not None:
        out = _docker_load(c, archive)
        tag = t.workload_image
    elif reference:
        _sudo(c, f"docker pull {shlex.quote(reference)}", timeout=600)
        tag, out = reference, ""
    else:
        raise StepError("neither an image archive nor an image reference was given")
    r = _sudo(c, f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(tag)}", warn=True)
    if not r.ok:
        raise StepError(f"image {tag} not on the builder after load ({out.strip()[-200:]})")
    return r.stdout.strip()


def _docker_load(c: Connection, archive: Path) -> str:
    """Upload a docker-archive and ``docker load`` it; returns docker's output."""
    c.put(str(archive), REMOTE_ARCHIVE)
    return _sudo(c, f"docker load -i {REMOTE_ARCHIVE} && rm -f {REMOTE_ARCHIVE}", timeout=600).stdout


def load_extra_images(c: Connection, archives: list[Path]) -> list[dict]:
    """``docker load`` each further image archive (``--extra-image``); returns for each its
    ``archive`` name, ``image_id`` and ``tags`` as the builder's Docker reports them."""
    loaded = []
    for archive in archives:
        out = _docker_load(c, archive)
        tags = [
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Loaded image:")
        ]
        ids = [
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Loaded image ID:")
        ]
        if not tags and not ids:
            raise StepError(f"docker load of {Path(archive).name} loaded nothing: {out.strip()[-200:]}")
        ref = tags[0] if tags else ids[0]
        r = _sudo(c, f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(ref)}", warn=True)
        if not r.ok:
            raise StepError(f"image {ref} not on the builder after loading {Path(archive).name}")
        loaded.append({"archive": Path(archive).name, "image_id": r.stdout.strip(), "tags": tags})
    return loaded


def install_unit(c: Connection, t: Template, image_ref: str | None = None) -> None:
    """Place the consumer unit and the baked image name, and enable the unit for boot."""
    _sudo(c, "install -d -m 0755 /etc/queue-workers")
    _put_root(c, f"QW_WORKLOAD_IMAGE={image_ref or t.workload_image}\n", IMAGE_ENV)
    _put_root(c, t.unit, f"/etc/systemd/system/{t.unit_name}")
    _sudo(c, f"systemctl enable {t.unit_name}")
    state = c.run(f"systemctl is-enabled {t.unit_name}", warn=True, hide=True).stdout.strip()
    if state != "enabled":
        raise StepError(f"{t.unit_name} is {state or 'unknown'} after enable (expected enabled)")


def verify_container(c: Connection, t: Template, image_ref: str | None = None) -> str:
    """The workload image runs on the builder (entrypoint answers --help) and the unit is enabled."""
    ref = image_ref or t.workload_image
    r = _sudo(c, f"docker run --rm --network none {shlex.quote(ref)} --help", warn=True, timeout=120)
    if not r.ok:
        raise StepError(
            f"the workload container did not run on the builder: {(r.stderr or r.stdout).strip()[-300:]}"
        )
    if c.run(f"systemctl is-enabled {t.unit_name}", warn=True, hide=True).stdout.strip() != "enabled":
        raise StepError(f"{t.unit_name} is not enabled")
    return r.stdout.strip().splitlines()[0] if r.stdout.strip() else ""


def generalise(c: Connection, t: Template, bake_public_key: str) -> None:
    """Make the builder a template: nothing of this server, of the bake or its key left behind.

    Must be the last step: afterwards the bake key no longer logs in (this session stays)."""
    key_body = bake_public_key.split()[1]
    home = (
        c.run(f"getent passwd {shlex.quote(t.login_user)} | cut -d: -f6", hide=True).stdout.strip()
        or f"/home/{t.login_user}"
    )
    script = f"""
set -e
if command -v cloud-init >/dev/null; then cloud-init clean --logs; fi
rm -f /var/lib/dbus/machine-id; : > /etc/machine-id
rm -f /etc/ssh/ssh_host_*
for f in /root/.ssh/authorized_keys {home}/.ssh/authorized_keys; do
  [ -f "$f" ] && sed -i '\\#{key_body}#d' "$f"
done
apt-get clean; rm -rf /var/lib/apt/lists/*
rm -f /root/.bash_history {home}/.bash_history {REMOTE_ARCHIVE} {home}/.qw-*.upload
journalctl --rotate --vacuum-time=1s >/dev/null 2>&1 || true
sync
"""
    _sudo(c, script)
    left = _sudo(
        c,
        f"grep -rl {shlex.quote(key_body)} /root/.ssh {home}/.ssh 2>/dev/null; "
        "ls /etc/ssh/ssh_host_* 2>/dev/null; test -s /etc/machine-id && echo machine-id",
        warn=True,
    ).stdout.strip()
    if left:
        raise StepError(f"generalise left behind: {left}")


def run_all(
    c: Connection,
    t: Template,
    bake_public_key: str,
    *,
    archive: Path | None = None,
    reference: str | None = None,
    extra_archives: tuple[Path, ...] | list[Path] = (),
    progress=None,
) -> dict:
    """Every step in order; returns facts for the template's properties and the manifest."""
    progress = progress or (lambda label, fn, *a, **k: fn(*a, **k))
    progress("wait for cloud-init", wait_for_cloud_init, c)
    progress("install packages", apt_install, c, t.packages)
    docker_version = progress("install docker", install_docker, c, t)
    image_id = progress("load workload image", load_image, c, t, archive, reference)
    extra = (
        progress("load extra images", load_extra_images, c, list(extra_archives)) if extra_archives else []
    )
    progress("install unit", install_unit, c, t, reference)
    progress("verify container", verify_container, c, t, reference)
    progress("generalise", generalise, c, t, bake_public_key)
    return {"docker_version": docker_version, "workload_image_id": image_id, "extra_images": extra}

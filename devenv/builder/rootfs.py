"""Debian bookworm root filesystems built with mmdebstrap, cached under the repo's .cache/.

Three are used:
- the *builder host* rootfs (a directory): what a fresh cloud server of the base image has that the
  bake relies on (sshd, python3, sudo, systemd, cloud-init's tools are not needed);
- the *container base* rootfs (a tar): python3 + venv (no perl, no pip outside venvs), imported into podman under the name
  the workload Dockerfile's FROM uses;
- the *cloud image* `debian-12` (a tar): the builder host's packages plus Debian's real cloud-init,
  configured as Debian's genericcloud image is, booted by devenv.machines (the local Nova's servers).

All carry this machine's CA certificates, because HTTPS (pip, Docker's apt repository) goes
through an intercepting CA here. Builds are serialised with a lock file so parallel test sessions
or `make image` never build the same rootfs twice at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
MIRROR = os.environ.get("QW_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CA_GLOB = "/usr/local/share/ca-certificates/*.crt"
MIRROR_HOST = "deb.debian.org"  # the name the rootfs's sources.list uses

# What a Debian cloud image gives the bake: sshd, python3 (Fabric needs only a shell, but
# cloud images ship it), sudo, systemd for the nspawn variant.
HOST_PACKAGES = [
    "openssh-server",
    "python3",
    "sudo",
    "ca-certificates",
    "iproute2",
    "procps",
    "systemd",
    "systemd-sysv",
    "dbus",
    "curl",
    "gnupg",
]
# The packages the bake installs (images/consumer/template.yaml + Docker from Debian).
PREFETCH_PACKAGES = ["docker.io", "jq"]
# The container base: python3 and venv (whose ensurepip needs no python3-pip). usr-is-merged
# stands in for usrmerge, which bookworm's minbase pulls in with all of perl (about 50 MB) only
# to merge /usr, already merged here; the purge below takes them out again.
BASE_IMAGE_PACKAGES = ["python3", "python3-venv", "ca-certificates", "usr-is-merged"]
BASE_IMAGE_PURGE = [
    "usrmerge",
    "perl",
    "libperl5.36",
    "perl-modules-5.36",
    "libfile-find-rule-perl",
    "libnumber-compare-perl",
    "libtext-glob-perl",
]


# The cloud image: what MACHINE_API.md promises, i.e. the builder host's packages and cloud-init.
CLOUD_PACKAGES = [*HOST_PACKAGES, "cloud-init"]
# /etc/cloud/cloud.cfg.d/ of the cloud image. Debian's packaged cloud.cfg already is what the
# genericcloud image runs with: default user `debian` (passwordless sudo, locked password, keys
# from the metadata's public_keys), ssh_deletekeys and the ssh module making host keys on first
# boot, keys_to_console printing them, sources.list kept. What is added for the local Nova:
CLOUD_CFG = {
    # The local Nova hands metadata over as a config drive. Its directory is placed at
    # /var/lib/cloud/seed/config_drive, which the ConfigDrive datasource reads first; a single
    # entry (plus None) in datasource_list makes ds-identify enable cloud-init without probing
    # for a drive. The interface is configured from network_data.json by cloud-init itself,
    # rendered for systemd-networkd (no DHCP exists on the local cloud's networks).
    # The image has no en_US.UTF-8 (cloud-init's default locale, which update-locale then
    # refuses): C.UTF-8 needs no generation. Host keys: ed25519 and ecdsa only (what OpenSSH
    # prefers); an RSA key took 0.5 to 11 s to make on this machine's two shared cores, and
    # bookworm's sshd refuses DSA anyway.
    "90_local_nova.cfg": """\
datasource_list: [ ConfigDrive, None ]
system_info:
  network:
    renderers: [ networkd ]
locale: C.UTF-8
ssh_genkeytypes: [ ed25519, ecdsa ]
manage_etc_hosts: true
""",
}


# nspawn mounts the cgroup v1 controllers read-only; dockerd needs to create cgroups in them.
CGROUP_DROPIN = """[Service]
ExecStartPre=+/bin/sh -c 'mount -o remount,bind,rw /sys/fs/cgroup 2>/dev/null; for d in /sys/fs/cgroup/*/; do mount -o remount,bind,rw "$d" 2>/dev/null || true; done'
"""


def cache_dir() -> Path:
    """Where rootfs builds are cached (QW_CACHE_DIR or <repo>/.cache)."""
    return Path(os.environ.get("QW_CACHE_DIR", REPO_ROOT / ".cache"))


def _log(msg: str) -> None:
    print(f"[rootfs] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mmdebstrap_args(packages: list[str], *, variant: str = "minbase", purge: list[str] = ()) -> list[str]:
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError(
            "mmdebstrap is not installed: run devenv/builder/install-deps.sh (make builder-deps)"
        )
    certs = sorted(glob.glob(CA_GLOB))
    args = [
        "mmdebstrap",
        f"--variant={variant}",
        "--quiet",
        '--aptopt=Acquire::Check-Valid-Until "false"',
        '--aptopt=Acquire::Check-Date "false"',
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--include=" + ",".join(packages),
    ]
    for cert in certs:
        args.append(f"--customize-hook=copy-in {cert} /usr/local/share/ca-certificates/")
    if certs:
        args.append('--customize-hook=chroot "$1" update-ca-certificates --fresh >/dev/null')
    if purge:
        args.append(
            '--customize-hook=chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq '
            + " ".join(purge)
        )
    # No stale apt lists in the cache: every user starts with `apt-get update`, as on a cloud image.
    args.append('--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin')
    return args


def builder_host_rootfs() -> Path:
    """The builder host's rootfs directory, built once and reused (read-only: mount an overlay)."""
    target = cache_dir() / "builder" / f"{SUITE}-host"
    stamp = target.with_suffix(".done")
    with locked(cache_dir() / "builder" / ".lock"):
        if stamp.exists() and target.is_dir():
            return target
        if target.exists():
            shutil.rmtree(target)
        _log(f"building the builder host rootfs ({SUITE}, mmdebstrap; about a minute)")
        t0 = time.monotonic()
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(
            _mmdebstrap_args(HOST_PACKAGES)
            + [
                # sshd host keys are made per boot by the host runner (like cloud-init does)
                '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
                SUITE,
                str(tmp),
                MIRROR,
            ],
            check=True,
        )
        tmp.rename(target)
        _prefetch(target)
        stamp.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        _log(f"builder host rootfs ready in {time.monotonic() - t0:.0f}s: {target}")
        return target


def _prefetch(root: Path) -> None:
    """Download (not install) the .debs the bake installs into the rootfs's apt cache.

    The bake's `apt-get install docker.io` then really installs them, without fetching ~60 MB
    from the mirror in every test (a cloud image near an apt proxy behaves the same way)."""
    _log("prefetching the bake's packages into the rootfs apt cache")
    shutil.copy(Path("/etc/resolv.conf").resolve(), root / "etc" / "resolv.conf")
    pkgs = " ".join(PREFETCH_PACKAGES)
    subprocess.run(
        [
            "unshare",
            "--mount",
            "--fork",
            "sh",
            "-ec",
            f"mount -t proc proc {root}/proc; "
            f"chroot {root} sh -ec 'apt-get update -qq -o Acquire::Check-Valid-Until=false && "
            f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --download-only {pkgs} && "
            f"rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin'; umount {root}/proc",
        ],
        check=True,
    )


def base_recipe() -> str:
    """A short hash of what goes into the container base: a cache (or an imported image) made
    from an older package list is not reused."""
    return hashlib.sha256(
        " ".join([SUITE, *BASE_IMAGE_PACKAGES, "--purge", *BASE_IMAGE_PURGE]).encode()
    ).hexdigest()[:12]


def _cached_tar(target: Path, what: str, args: list[str]) -> Path:
    """Build ``target`` (a rootfs tar) with mmdebstrap ``args`` once, under the folder's lock."""
    with locked(target.parent / ".lock"):
        if target.exists():
            return target
        _log(f"building the {what} ({SUITE}, mmdebstrap; about a minute)")
        t0 = time.monotonic()
        tmp = target.with_suffix(".tmp.tar")
        subprocess.run(args + ["--format=tar", SUITE, str(tmp), MIRROR], check=True)
        tmp.rename(target)
        _log(f"{what} ready in {time.monotonic() - t0:.0f}s: {target}")
        return target


def container_base_tar() -> Path:
    """A tar of the container base rootfs (python3, pip, venv), built once and reused."""
    return _cached_tar(
        cache_dir() / "image" / f"{SUITE}-python-base-{base_recipe()}.tar",
        "container base rootfs",
        _mmdebstrap_args(BASE_IMAGE_PACKAGES, purge=BASE_IMAGE_PURGE),
    )


def _cloud_image_hooks() -> list[str]:
    hooks = ['--customize-hook=mkdir -p "$1"/etc/cloud/cloud.cfg.d']
    for name, text in sorted(CLOUD_CFG.items()):
        hooks.append(f'--customize-hook=printf %s {shlex.quote(text)} > "$1"/etc/cloud/cloud.cfg.d/{name}')
    return hooks + [
        # Host keys and the machine id are made on each server's first boot (cloud-init's ssh
        # module, systemd), never shared by every server of the image.
        '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
        '--customize-hook=: > "$1"/etc/machine-id',
        # mmdebstrap leaves this machine's resolv.conf and hostname behind. The local networks
        # have no DNS server (the metadata names none): an empty resolv.conf makes lookups fail
        # at once (127.0.0.1:53 refuses) instead of timing out on an unreachable server.
        '--customize-hook=echo "# no DNS server on the local cloud\'s networks" > "$1"/etc/resolv.conf',
        '--customize-hook=echo localhost > "$1"/etc/hostname',
        # cloud-init writes /etc/hosts from its template at every boot (so sudo resolves the
        # server's own name). The template also names Debian's mirror 127.0.0.1: the mirror is
        # relayed into each server's namespace there (devenv.machines), as a cloud's images
        # point at the cloud's own mirror.
        f'--customize-hook=echo "127.0.0.1 {MIRROR_HOST}" >> "$1"/etc/cloud/templates/hosts.debian.tmpl',
        # cloud-init renders the network for systemd-networkd, which Debian leaves disabled.
        '--customize-hook=chroot "$1" systemctl enable systemd-networkd.service',
        # The local networks have no IPv6 router: networkd would hold the link "configuring"
        # (and boot, in systemd-networkd-wait-online) 12 s for router advertisements. A drop-in
        # for each file cloud-init writes (10-cloud-init-<ifname>.network, eth0..eth7 here).
        '--customize-hook=for i in 0 1 2 3 4 5 6 7; do d="$1"/etc/systemd/network/10-cloud-init-eth$i.network.d; '
        'mkdir -p "$d"; printf "[Network]\\nIPv6AcceptRA=no\\n" > "$d"/10-no-router-advertisements.conf; done',
        # nspawn mounts the cgroup v1 controllers read-only and dockerd must create cgroups in
        # them: a drop-in for the docker.service a bake installs (a no-op on a real VM).
        '--customize-hook=mkdir -p "$1"/etc/systemd/system/docker.service.d',
        f"--customize-hook=printf %s {shlex.quote(CGROUP_DROPIN)} > "
        '"$1"/etc/systemd/system/docker.service.d/10-nspawn-cgroups.conf',
    ]


def cloud_recipe() -> str:
    """A short hash of everything that goes into the cloud image (packages, config, hooks)."""
    return hashlib.sha256("\n".join([SUITE, *CLOUD_PACKAGES, *_cloud_image_hooks()]).encode()).hexdigest()[
        :12
    ]


def cloud_image() -> Path:
    """The base cloud image ``debian-12``: a rootfs tar (bookworm, systemd, sshd, Debian's
    cloud-init configured as the genericcloud image), built once per recipe and reused."""
    return _cached_tar(
        cache_dir() / "cloud" / f"debian-12-{cloud_recipe()}.tar",
        "cloud image debian-12",
        _mmdebstrap_args(CLOUD_PACKAGES) + _cloud_image_hooks(),
    )


if __name__ == "__main__":
    builds = {"host": builder_host_rootfs, "base": container_base_tar, "cloud": cloud_image}
    for w in sys.argv[1:] or ["host", "base"]:
        print(builds[w]())

"""Fixtures for the bake tests: a bake key pair, the workload image archive, a real builder host."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _builder_prereqs() -> str | None:
    if os.geteuid() != 0:
        return "the builder host needs root (unshare, overlay, chroot)"
    for tool in ("mmdebstrap", "podman", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: run `make builder-deps` (devenv/builder/install-deps.sh)"
    return None


@pytest.fixture(scope="session")
def builder_prereqs():
    """Root and the builder tools; `make test` installs the tools first, so this never skips there."""
    reason = _builder_prereqs()
    if reason:
        pytest.skip(reason=reason)


@pytest.fixture(scope="session")
def builder_rootfs(builder_prereqs):
    """The cached Debian rootfs every builder host boots from, built once (about a minute on a
    fresh clone) before any test starts a host: a host's own start timeout must not pay for it."""
    from devenv.builder import rootfs

    return rootfs.builder_host_rootfs()


@pytest.fixture(scope="session")
def bake_key(tmp_path_factory):
    """An ed25519 key pair, as the bake makes for each run: (private key path, public key line)."""
    d = tmp_path_factory.mktemp("bake-key")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qw-bake-test", "-f", str(d / "id")], check=True
    )
    return str(d / "id"), (d / "id.pub").read_text().strip()


@pytest.fixture(scope="session")
def workload_archive(builder_prereqs):
    """build/queue-workers-image.tar, built (as `make image` does) if missing or older than its sources."""
    from devenv.builder import image

    return image.current()


@pytest.fixture()
def builder_host(builder_rootfs, bake_key):
    """A fresh real builder host (Debian rootfs, sshd on 127.0.0.1:PORT) that accepts the bake key."""
    from devenv.builder.host import BuilderHost

    with BuilderHost(authorized_key=bake_key[1]) as host:
        yield host

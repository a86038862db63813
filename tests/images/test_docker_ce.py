"""`--docker-method docker-ce`: Docker's apt repository added to a real builder host, key checked.

Docker's repository (download.docker.com) cannot be reached from here. ``devenv.docker_repo``
serves one with its layout on loopback, signed with its own GnuPG key, whose docker-ce,
docker-ce-cli and containerd.io are metapackages over Debian's Docker (see that module). The
builder host is the real one (Debian rootfs, sshd, apt), so what runs is the step as it runs in a
cloud: fetch ``<repository>/gpg``, check the fingerprint, write a ``signed-by`` source for the
host's architecture, ``apt-get update`` (apt checks the InRelease signature) and install.
"""

from __future__ import annotations

import dataclasses

import pytest
from invoke.exceptions import UnexpectedExit

from devenv.docker_repo import DockerRepo
from images import steps, template
from images.ssh import host_keys_from_console, pinned_connection

pytestmark = pytest.mark.builder


@pytest.fixture(scope="module")
def docker_repo(builder_rootfs, tmp_path_factory):
    """The repository, built once for this file from the docker.io .deb the builder rootfs caches."""
    debs = sorted((builder_rootfs / "var" / "cache" / "apt" / "archives").glob("docker.io_*.deb"))
    assert debs, (
        "the builder rootfs has no docker.io .deb in its apt cache (devenv.builder.rootfs prefetches it)"
    )
    with DockerRepo(tmp_path_factory.mktemp("docker-repo"), engine_deb=debs[-1]) as repo:
        yield repo


def _connect(host, bake_key):
    keys = host_keys_from_console(host.console_log())
    return pinned_connection("127.0.0.1", host.port, "debian", bake_key[0], keys)


def _docker_ce(repo: DockerRepo, fingerprint: str | None = None) -> template.Template:
    """The template with docker-ce from `repo`, as `--docker-method docker-ce --docker-repository
    URL --docker-key-fingerprint FPR` loads it."""
    return template.load(
        docker_method="docker-ce",
        docker_repository=repo.url,
        docker_key_fingerprint=fingerprint or repo.fingerprint,
    )


def _installed(c, package: str) -> bool:
    return (
        c.run(f"dpkg-query -W -f='${{Status}}' {package}", warn=True, hide=True).stdout
        == "install ok installed"
    )


def test_docker_ce_installs_from_the_signed_repository(builder_host, bake_key, docker_repo):
    t = _docker_ce(docker_repo)
    with _connect(builder_host, bake_key) as c:
        steps.apt_install(c, t.packages)  # curl and gnupg, as run_all installs them first
        version = steps.install_docker(c, t)

        assert version.startswith("Docker version")
        for package in ("docker-ce", "docker-ce-cli", "containerd.io"):
            assert _installed(c, package), package
        arch = c.run("dpkg --print-architecture", hide=True).stdout.strip()
        source = c.run(f"cat {steps.DOCKER_SOURCE}", hide=True).stdout
        assert (
            source
            == f"deb [arch={arch} signed-by={steps.DOCKER_KEYRING}] {docker_repo.url} bookworm stable\n"
        )
        # The keyring apt trusts for that source holds exactly the repository's key.
        listed = c.run(f"gpg --batch --with-colons --show-keys {steps.DOCKER_KEYRING}", hide=True).stdout
        assert [line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:")] == [
            docker_repo.fingerprint
        ]
        daemon = c.run("cat /etc/docker/daemon.json", hide=True).stdout
        assert '"max-size"' in daemon


def test_a_key_with_another_fingerprint_is_refused_before_apt_trusts_it(builder_host, bake_key, docker_repo):
    t = template.load(docker_method="docker-ce", docker_repository=docker_repo.url)  # Docker's fingerprint
    with _connect(builder_host, bake_key) as c:
        steps.apt_install(c, t.packages)
        with pytest.raises(steps.StepError) as err:
            steps.install_docker(c, t)
        assert docker_repo.fingerprint in str(err.value)
        assert template.DOCKER_CE_KEY_FINGERPRINT in str(err.value)
        # Nothing of the repository is left for apt to use, and nothing was installed.
        leftovers = c.run(
            f"ls {steps.DOCKER_KEYRING}* {steps.DOCKER_SOURCE} 2>/dev/null", warn=True, hide=True
        )
        assert leftovers.stdout == ""
        assert not _installed(c, "docker-ce")


def test_a_repository_signed_by_another_key_is_refused_by_apt(builder_host, bake_key, docker_repo, tmp_path):
    """The published key matches the fingerprint, but the Release files are signed by another key
    (a tampered mirror): apt-get update refuses the repository and nothing from it is installed."""
    intruder = DockerRepo(tmp_path / "intruder")
    t = _docker_ce(docker_repo)
    try:
        docker_repo.sign(intruder)
        with _connect(builder_host, bake_key) as c:
            steps.apt_install(c, t.packages)
            with pytest.raises(UnexpectedExit) as err:
                steps.install_docker(c, t)
            assert "NO_PUBKEY" in err.value.result.stderr or "not signed" in err.value.result.stderr
            assert not _installed(c, "docker-ce")
    finally:
        docker_repo.sign()
        intruder.stop()


def test_the_docker_method_and_repository_are_part_of_the_template_content(docker_repo):
    """A docker-ce template is never reused for a distro bake (or another repository's)."""
    distro = template.load()
    ce = _docker_ce(docker_repo)
    other = dataclasses.replace(ce, docker_ce_repository=ce.docker_ce_repository + "-mirror")
    hashes = {distro.content_hash("sha256:x"), ce.content_hash("sha256:x"), other.content_hash("sha256:x")}
    assert len(hashes) == 3


def test_fab_bake_template_refuses_a_malformed_fingerprint_before_touching_a_cloud(tmp_path):
    """A bad --docker-key-fingerprint stops `fab bake-template` before it connects (no cloud is
    configured here: reaching one would fail differently). The whole docker-ce bake on the local
    cloud is tests/cloud/test_bake_real.py's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo_root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(tmp_path / "no-clouds.yaml")
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("fab")),
            "-r",
            str(repo_root),
            "bake-template",
            "--docker-method",
            "docker-ce",
            "--docker-key-fingerprint",
            "not-a-key",
            "--manifest",
            str(tmp_path / "m.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=repo_root,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    assert "--docker-key-fingerprint = 'not-a-key': a key fingerprint is 40 hex digits" in run.stderr
    assert not (tmp_path / "m.json").exists()

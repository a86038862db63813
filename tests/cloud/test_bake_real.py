"""`fab bake-template` on the local cloud: real Nova, Glance, Neutron, a real builder server.

The builder boots from ``debian-12`` as a systemd-nspawn machine (devenv.nova_driver); real
cloud-init prints its host keys on the console, the bake pins them, gives the builder a floating
IP from ``ext-net`` and SSHes to it as ``debian`` (devenv.floating_ips routes it to the fixed IP,
as an L3 agent would), installs Docker with ``--docker-method docker-ce`` from
``devenv.docker_repo`` (Docker's repository layout, signed, on loopback; the cloud offers its
port to the builder as it does the catalog's), loads the workload image archive, stops the
server cleanly and makes the template with createImage. The second run of the same content
reuses it without booting a builder. (The distro Docker bake on the cloud is the whole-loop
test's.) Ctrl-C during a `fab` bake is the last test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devenv import cloud as local_cloud
from images import bake as bake_mod

pytestmark = pytest.mark.cloud
REPO_ROOT = Path(__file__).resolve().parents[2]


def _images_fixtures():
    """tests/images/conftest.py, whose ``workload_archive`` (built only when its sources changed,
    so the cached build is reused) and ``builder_prereqs`` the bake here needs too."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "images_conftest", REPO_ROOT / "tests" / "images" / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_IMAGES = _images_fixtures()
builder_prereqs, workload_archive = _IMAGES.builder_prereqs, _IMAGES.workload_archive
builder_rootfs = _IMAGES.builder_rootfs


@pytest.fixture(scope="module")
def docker_repo(builder_rootfs, tmp_path_factory):
    """Docker's repository stand-in (devenv.docker_repo), from the docker.io .deb the builder
    rootfs caches."""
    from devenv.docker_repo import DockerRepo

    debs = sorted((builder_rootfs / "var" / "cache" / "apt" / "archives").glob("docker.io_*.deb"))
    assert debs, "the builder rootfs has no docker.io .deb in its apt cache"
    with DockerRepo(tmp_path_factory.mktemp("docker-repo"), engine_deb=debs[-1]) as repo:
        yield repo


def leftovers(conn, run_prefix="qw-bake-") -> dict:
    """What a bake may leave behind in the project, by the bake's own names."""
    return {
        "servers": [s.name for s in conn.compute.servers() if s.name.startswith(run_prefix)],
        "keypairs": [k.name for k in conn.compute.keypairs() if k.name.startswith(run_prefix)],
        "security_groups": [
            g.name
            for g in conn.network.security_groups(project_id=conn.current_project_id)
            if g.name.startswith(run_prefix)
        ],
        "floating_ips": [
            f.id
            for f in conn.network.ips(project_id=conn.current_project_id)
            if (f.description or "").startswith("queue-workers bake")
        ],
    }


NOTHING_LEFT = {"servers": [], "keypairs": [], "security_groups": [], "floating_ips": []}


def _fab(cloud, tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(cloud.env("local"), PYTHONWARNINGS="ignore")
    fab = [str(Path(sys.executable).with_name("fab")), "-r", str(REPO_ROOT)]
    return subprocess.run([*fab, *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=1800)


def test_fab_bake_template_on_the_local_cloud_then_reuse(
    cloud, member, tmp_path, workload_archive, docker_repo
):
    from urllib.parse import urlsplit

    base = member.image.find_image(local_cloud.BASE_IMAGE, ignore_missing=False)
    fpr = " ".join(docker_repo.fingerprint[i : i + 4] for i in range(0, 40, 4))  # as gpg prints it
    bake_args = [
        "bake-template",
        "--network",
        local_cloud.PROVIDER_NETWORK,
        "--floating-ip-network",
        local_cloud.EXTERNAL_NETWORK,
        "--docker-method",
        "docker-ce",
        "--docker-repository",
        docker_repo.url,
        "--docker-key-fingerprint",
        fpr,
        "--image-archive",
        str(workload_archive),
    ]
    manifest_path = tmp_path / "manifest.json"
    with cloud.offer_port(urlsplit(docker_repo.url).port):
        run = _fab(cloud, tmp_path, *bake_args, "--manifest", str(manifest_path), "--timeout", "600")
    sys.stderr.write(run.stderr[-6000:])
    assert run.returncode == 0, run.stderr[-4000:]
    printed = json.loads(run.stdout.strip().splitlines()[-1])
    assert printed["reused"] is False
    for step in (
        "create key pair",
        "read SSH host key from the console log",
        f"floating IP on {local_cloud.EXTERNAL_NETWORK}",
        "install docker",
        "power off builder",
        "mark template complete",
    ):
        assert f"[bake] {step}" in run.stderr
    assert f"SSH to debian@{local_cloud.EXTERNAL_CIDR.rsplit('.', 1)[0]}." in run.stderr  # the floating IP

    img = member.image.get_image(printed["template_image_id"])
    try:
        props = img.properties
        record = json.loads(workload_archive.with_suffix(".json").read_text())
        assert img.status == "active" and img.owner == member.current_project_id
        assert img.size and img.size > 100 << 20, img.size  # Debian + Docker + the workload image
        assert props[bake_mod.P_STATE] == "complete" and props[bake_mod.P_NAME] == "queue-workers-consumer"
        assert props[bake_mod.P_VERSION] == "1" and props[bake_mod.P_DIGEST] == record["image_id"]
        assert props[bake_mod.P_BASE_ID] == base.id and props[bake_mod.P_BASE_NAME] == "debian-12"
        assert props[bake_mod.P_DOCKER] == "docker-ce"
        assert len(props[bake_mod.P_COMMIT]) >= 40 and props[bake_mod.P_TIME].endswith("Z")
        assert props.get("image_type") == "snapshot"  # Nova's createImage made it
        on_disk = json.loads(manifest_path.read_text())
        assert on_disk["template_image_id"] == img.id and on_disk["docker_version"].startswith(
            "Docker version"
        )
        assert leftovers(member) == NOTHING_LEFT

        # The same content again: the template is reused, no builder is booted.
        run = _fab(cloud, tmp_path, *bake_args, "--manifest", str(tmp_path / "again.json"))
        assert run.returncode == 0, run.stderr[-4000:]
        assert json.loads(run.stdout.strip().splitlines()[-1]) == {
            "template_image_id": img.id,
            "template_name": img.name,
            "reused": True,
        }
        assert "boot builder" not in run.stderr
    finally:
        member.image.delete_image(img, ignore_missing=True)
    assert leftovers(member) == NOTHING_LEFT


def test_ctrl_c_on_fab_bake_template_cleans_up(cloud, member, tmp_path, workload_archive):
    """A real SIGINT to `fab bake-template` while a Fabric step runs: exit 130, nothing left."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(cloud.env("local"), PYTHONWARNINGS="ignore")
    p = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("fab")),
            "-r",
            str(REPO_ROOT),
            "bake-template",
            "--network",
            local_cloud.PROVIDER_NETWORK,
            "--image-archive",
            str(workload_archive),
            "--manifest",
            str(tmp_path / "m.json"),
            "--force",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )
    seen = []
    try:
        while True:
            line = p.stderr.readline()
            assert line, "".join(seen)
            seen.append(line)
            if line.startswith("[bake] install docker ..."):
                break
        time.sleep(1)
        p.send_signal(signal.SIGINT)
        seen += p.stderr.readlines()
        p.wait(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    err = "".join(seen)
    assert p.returncode == 130, err[-4000:]
    assert "everything it created was removed" in err
    assert leftovers(member) == NOTHING_LEFT
    assert not (tmp_path / "m.json").exists()

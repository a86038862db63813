"""`fab bake-template` end to end against the local cloud stand-in, whose servers are real builder hosts.

The stand-in (devenv/cloud_standin) answers openstacksdk as Keystone, Nova, Glance and Neutron
do; each server it boots is a real Debian builder host reachable over SSH, whose console log
carries its real host keys. Faults are injected at every step: nothing may leak and no half-made
image may be left looking like a template.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import openstack
import pytest
import yaml

from images import bake as bake_mod

pytestmark = pytest.mark.builder
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cloud(builder_rootfs):
    from devenv.builder.host import BuilderHost
    from devenv.cloud_standin import CloudStandin

    with CloudStandin(
        lambda pub, port: BuilderHost(authorized_key=pub, port=port), boot_seconds=0.2, snapshot_seconds=0.6
    ) as c:
        c.conn = openstack.connect(**c.cloud_config()["auth"], region_name="RegionOne")
        yield c


def _opts(cloud, tmp_path, archive, **kw):
    kw = {"timeout": 20, "poll": 0.3, **kw}
    return bake_mod.BakeOptions(
        connection=cloud.conn,
        image_archive=archive,
        ssh_port=cloud.state.ssh_port,
        manifest=tmp_path / "manifest.json",
        **kw,
    )


def _templates_looking_valid(cloud):
    with cloud.state.lock:
        return [
            i
            for i in cloud.state.images.values()
            if i.get(bake_mod.P_STATE) == "complete" and i["status"] == "active"
        ]


def _non_base_images(cloud):
    with cloud.state.lock:
        return [
            (i["name"], i["status"], i.get(bake_mod.P_STATE))
            for i in cloud.state.images.values()
            if i["id"] != cloud.state.base_image_id
        ]


NOTHING_LEFT = {"servers": [], "keypairs": [], "security_groups": [], "floating_ips": [], "ports": []}


def test_bake_makes_a_template_with_properties_and_manifest_then_reuses_it(
    cloud, tmp_path, workload_archive, capsys
):
    opts = _opts(cloud, tmp_path, workload_archive, floating_ip_network="public")
    cloud.state.fixed_ip = "10.0.0.5"  # not reachable: the bake must go through the floating IP
    manifest = bake_mod.bake(opts)

    img = cloud.conn.image.get_image(manifest["template_image_id"])
    props = img.properties
    record = json.loads(workload_archive.with_suffix(".json").read_text())
    assert img.status == "active" and props[bake_mod.P_STATE] == "complete"
    assert props[bake_mod.P_VERSION] == "1" and props[bake_mod.P_NAME] == "queue-workers-consumer"
    assert props[bake_mod.P_DIGEST] == record["image_id"]
    assert (
        props[bake_mod.P_BASE_ID] == cloud.state.base_image_id and props[bake_mod.P_BASE_NAME] == "debian-12"
    )
    assert len(props[bake_mod.P_COMMIT]) >= 40 and props[bake_mod.P_TIME].endswith("Z")
    assert props["image_type"] == "snapshot"  # made by Nova's createImage from the builder
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["template_image_id"] == img.id and on_disk["reused"] is False
    assert {"create key pair", "power off builder", "generalise", "install docker"} <= set(on_disk["steps"])
    # SSH was opened only from this machine, only on the builder's port.
    assert cloud.state.leftovers() == NOTHING_LEFT
    err = capsys.readouterr().err
    assert "[bake] install docker: done in" in err and "floating IP on public: done in" in err

    # Same content again, through the fab command and a clouds.yaml: reused, no builder booted.
    before = len([r for r in cloud.request_log if r == ("POST", "/compute/v2.1/servers")])
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"standin": cloud.cloud_config()}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    fab = [str(Path(sys.executable).with_name("fab")), "-r", str(REPO_ROOT)]
    run = subprocess.run(
        [
            *fab,
            "bake-template",
            "--cloud",
            "standin",
            "--region",
            "RegionOne",
            "--image-archive",
            str(workload_archive),
            "--manifest",
            str(tmp_path / "again.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    again = json.loads(run.stdout.strip().splitlines()[-1])
    assert again == {"template_image_id": img.id, "template_name": img.name, "reused": True}
    assert "unchanged content: reusing template" in run.stderr
    assert len([r for r in cloud.request_log if r == ("POST", "/compute/v2.1/servers")]) == before

    # prune through fab too: the one template is the newest, so nothing goes.
    run = subprocess.run(
        [*fab, "prune-templates", "--cloud", "standin", "--keep", "1", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["kept"] == [img.name]


CLOUD_FAULTS_EARLY = [
    "keypair.create",
    "secgroup.create",
    "secgroup_rule.create",
    "server.create",
    "server.error",
    "fip.create",
    "console.nokey",
]
# (image.killed is the fault of the --keep-builder-on-error test below.)
CLOUD_FAULTS_LATE = ["server.stop", "server.create_image", "image.stuck"]


@pytest.mark.parametrize("fault", CLOUD_FAULTS_EARLY + CLOUD_FAULTS_LATE)
def test_a_cloud_fault_at_any_step_leaks_nothing_and_leaves_no_valid_image(
    cloud, tmp_path, workload_archive, fault
):
    cloud.state.faults.add(fault)
    opts = _opts(cloud, tmp_path, workload_archive, floating_ip_network="public", timeout=8)
    with pytest.raises(Exception) as err:
        bake_mod.bake(opts)
    assert not isinstance(err.value, AssertionError)
    assert cloud.state.leftovers() == NOTHING_LEFT
    assert _templates_looking_valid(cloud) == []
    assert _non_base_images(cloud) == []  # a half-made snapshot is deleted
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize(
    "at,exc",
    [
        ("install packages", RuntimeError),  # a Fabric step fails
        ("install docker", KeyboardInterrupt),  # Ctrl-C in a Fabric step
        ("mark template complete", KeyboardInterrupt),
    ],
)  # Ctrl-C after the snapshot
def test_interrupt_or_step_failure_cleans_up(cloud, tmp_path, workload_archive, at, exc):
    def hook(label):
        if label.startswith(at):
            raise exc(f"injected at {label}")

    with pytest.raises(exc):
        bake_mod.bake(_opts(cloud, tmp_path, workload_archive, step_hook=hook))
    assert cloud.state.leftovers() == NOTHING_LEFT
    assert _templates_looking_valid(cloud) == [] and _non_base_images(cloud) == []


def test_keep_builder_on_error_keeps_the_builder_but_not_a_half_made_image(cloud, tmp_path, workload_archive):
    cloud.state.faults.add("image.killed")  # the snapshot was made, then failed
    with pytest.raises(bake_mod.BakeError, match="killed"):
        bake_mod.bake(_opts(cloud, tmp_path, workload_archive, keep_builder_on_error=True))
    left = cloud.state.leftovers()
    assert len(left["servers"]) == 1 and len(left["keypairs"]) == 1 and len(left["security_groups"]) == 1
    assert _non_base_images(cloud) == []


def test_prune_keeps_newest_and_images_in_use(cloud):
    st = cloud.state
    made = []
    for n in range(5):
        img = st.new_image(
            f"queue-workers-consumer-v1-{n}",
            status="active",
            properties={bake_mod.P_NAME: "queue-workers-consumer", bake_mod.P_STATE: "complete"},
        )
        img["created_at"] = f"2026-01-0{n + 1}T00:00:00Z"
        made.append(img)
    stale = st.new_image(
        "queue-workers-consumer-v1-half",
        status="killed",
        properties={bake_mod.P_NAME: "queue-workers-consumer", bake_mod.P_STATE: "baking"},
    )
    # The oldest template is still booted by a server (e.g. a scaling-group member).
    with st.lock:
        st.servers["s1"] = {
            "id": "s1",
            "name": "member-1",
            "status": "ACTIVE",
            "image": {"id": made[0]["id"]},
            "flavor": {},
            "addresses": {},
            "metadata": {},
        }
    result = bake_mod.prune(cloud.conn, keep=2)
    with st.lock:
        st.servers.pop("s1")
        remaining = {i["name"] for i in st.images.values()}
    assert result["kept"] == ["queue-workers-consumer-v1-4", "queue-workers-consumer-v1-3"]
    assert result["in_use"] == ["queue-workers-consumer-v1-0"]
    assert sorted(result["deleted"]) == [
        "queue-workers-consumer-v1-1",
        "queue-workers-consumer-v1-2",
        stale["name"],
    ]
    assert remaining == {
        "debian-12",
        "queue-workers-consumer-v1-0",
        "queue-workers-consumer-v1-3",
        "queue-workers-consumer-v1-4",
    }
    with pytest.raises(bake_mod.BakeError, match="keep at least 1"):
        bake_mod.prune(cloud.conn, keep=0)


def test_ctrl_c_on_the_fab_command_cleans_up(cloud, tmp_path, workload_archive):
    """A real SIGINT to `fab bake-template` while a Fabric step runs: exit 130, nothing left."""
    import signal

    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"standin": cloud.cloud_config()}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_CLIENT_CONFIG_FILE=str(clouds), PYTHONWARNINGS="ignore")
    p = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("fab")),
            "-r",
            str(REPO_ROOT),
            "bake-template",
            "--cloud",
            "standin",
            "--ssh-port",
            str(cloud.state.ssh_port),
            "--image-archive",
            str(workload_archive),
            "--manifest",
            str(tmp_path / "m.json"),
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
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    err = "".join(seen)
    assert p.returncode == 130, err
    assert "everything it created was removed" in err
    assert cloud.state.leftovers() == NOTHING_LEFT
    assert _non_base_images(cloud) == [] and not (tmp_path / "m.json").exists()

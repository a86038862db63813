"""`prune-templates` on the real Nova, Glance and Heat of the local cloud.

Template images are real Glance images with the bake's properties (made one second apart: Glance
orders by ``created_at``, to the second). One is booted by a real server (a machine, from a
copy of the ``debian-12`` rootfs: the image a server boots must be bootable), one is named only
by a Heat stack's parameter (Heat's stack list carries no parameters, and the template says
``get_param``: prune has to read each stack in full). Both are kept while used, deleted after.
A half-made image (``qw_bake_state=baking``, a bake that could not delete it) is deleted. A stack
whose record Heat refuses to show (403, through devenv.fault_proxy in front of the real Heat)
might boot any image: that prune deletes nothing and names the stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from test_bake_faults import proxied

from devenv import cloud as local_cloud
from devenv.heat import wait_stack
from images import bake
from images.prune import prune

pytestmark = pytest.mark.cloud
REPO = Path(__file__).resolve().parents[2]
TEMPLATE_NAME = "queue-workers-consumer"
STACK_TEMPLATE = {
    "heat_template_version": "2021-04-16",
    "parameters": {"image": {"type": "string"}},
    "resources": {"nothing": {"type": "OS::Heat::None"}},
}


@pytest.fixture()
def templates(member):
    """Factory: ``templates(n, bootable=())`` -> n complete template images, oldest first; those
    whose index is in ``bootable`` hold the debian-12 rootfs. All deleted after the test."""
    made = []

    def make(count: int, bootable=(), state="complete") -> list:
        run = uuid.uuid4().hex[:6]
        out = []
        for n in range(count):
            kw = {"filename": str(local_cloud.base_image())} if n in bootable else {"data": b"not a rootfs"}
            img = member.image.create_image(
                name=f"{TEMPLATE_NAME}-v1-{run}-{n}{'' if state == 'complete' else '-' + state}",
                disk_format="raw",
                container_format="bare",
                wait=True,
                allow_duplicates=True,
                validate_checksum=False,
                **{bake.P_NAME: TEMPLATE_NAME, bake.P_STATE: state},
                **kw,
            )
            made.append(img.id)
            out.append(member.image.wait_for_status(img, status="active", wait=300))
            time.sleep(1.1)
        return out

    yield make
    for image_id in made:
        member.image.delete_image(image_id, ignore_missing=True)


def names(member, made) -> set[str]:
    ids = {i.id for i in made}
    return {i.name for i in member.image.images(owner=member.current_project_id) if i.id in ids}


@pytest.fixture()
def heat(member):
    from keystoneauth1 import adapter

    return adapter.Adapter(member.session, service_type="orchestration", interface="public")


@pytest.fixture()
def stack_naming(heat):
    """Factory: a Heat stack whose parameter is an image id -> (name, path); deleted at the end."""
    made = []

    def create(image_id: str) -> tuple[str, str]:
        name = f"qw-prune-{uuid.uuid4().hex[:8]}"
        resp = heat.post(
            "/stacks",
            json={"stack_name": name, "template": STACK_TEMPLATE, "parameters": {"image": image_id}},
        )
        path = f"/stacks/{name}/{resp.json()['stack']['id']}"
        made.append(path)
        assert wait_stack(heat, path)["stack_status"] == "CREATE_COMPLETE"
        return name, path

    yield create
    for path in made:
        heat.delete(path, raise_exc=False)


def test_prune_keeps_what_a_server_or_a_stack_uses_then_deletes_it(
    cloud, member, heat, templates, stack_naming
):
    (half,) = templates(1, state="baking")
    booted, named, middle, newest = templates(4, bootable=(0,))
    made = [half, booted, named, middle, newest]
    server = member.compute.create_server(
        name=f"qw-prune-{uuid.uuid4().hex[:8]}",
        image_id=booted.id,
        flavor_id=member.compute.find_flavor("m1.small").id,
        networks=[{"uuid": member.network.find_network(local_cloud.PROVIDER_NETWORK).id}],
    )
    try:
        member.compute.wait_for_server(server, status="ACTIVE", wait=240)
        stack_name, stack_path = stack_naming(named.id)

        # A stack Heat will not show (403): nothing is deleted, the stack is named.
        with proxied(cloud, ("orchestration",)) as (through, proxies):
            refusal = proxies["orchestration"].fail("GET", r"/stacks/[^/]+", status=403)
            with pytest.raises(bake.BakeError, match=r"cannot read stack [^:]+: .*Forbidden; not pruning"):
                prune(through, keep=1)
        assert refusal.fired
        assert names(member, made) == {i.name for i in made}

        # Through fab, as a user runs it: it says who keeps what, and deletes only the unused.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(cloud.env("local"), PYTHONWARNINGS="ignore")
        run = subprocess.run(
            [str(Path(sys.executable).with_name("fab")), "-r", str(REPO), "prune-templates", "--keep", "1"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert newest.name in result["kept"]
        assert {booted.name, named.name} <= set(result["in_use"])
        assert {middle.name, half.name} <= set(result["deleted"])
        assert f"keeping {booted.name} ({booted.id}): in use by server {server.name}" in run.stderr
        assert f"keeping {named.name} ({named.id}): in use by stack {stack_name}" in run.stderr
        assert names(member, made) == {booted.name, named.name, newest.name}
    finally:
        member.compute.delete_server(server, ignore_missing=True)
        member.compute.wait_for_delete(server, wait=180)
    heat.delete(stack_path)
    assert wait_stack(heat, stack_path)["stack_status"] == "DELETE_COMPLETE"

    result = prune(member, keep=1)
    assert {booted.name, named.name} <= set(result["deleted"]) and result["in_use"] == []
    assert names(member, made) == {newest.name}
    with pytest.raises(bake.BakeError, match="keep at least 1"):
        prune(member, keep=0)

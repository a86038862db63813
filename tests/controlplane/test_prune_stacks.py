"""`fab prune-templates` never deletes a template image that a Heat stack still names.

The cloud is the bake's stand-in (devenv/cloud_standin: Keystone, Nova, Glance, Neutron) joined to
the session's real Heat 27 (``controlplane``): the stand-in's catalog lists an orchestration
service, and every request to it goes to the real Heat as it came. The stack is the one
`pulumi up` makes: the example stack's own rendered template (``python -m infra render``), its
``image`` parameter set to the id of an old template image, as the program's image lookup sets it
(servers mapped to ``OS::Heat::None`` and the ``glance.image`` constraint dropped: no Nova and no
Glance behind this Heat, see devenv/heat.py).

Heat's stack list carries no parameters, and the template only says ``get_param: image``: prune
has to read each stack in full to see the image id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from devenv.heat import NO_NOVA_ENVIRONMENT, wait_no_deletions, wait_stack, without_glance
from images import bake
from infra import hot
from infra.render import render, stack_names

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_NAME = "queue-workers-consumer"


@pytest.fixture()
def orchestration(heat_session):
    from keystoneauth1 import adapter

    return adapter.Adapter(heat_session, service_type="orchestration", interface="public")


@pytest.fixture()
def cloud(orchestration):
    """The stand-in cloud with the real Heat as its orchestration service. No server is booted
    here, so its server factory is never called."""
    import openstack

    from devenv.cloud_standin import CloudStandin

    def no_servers(public_key, port):
        raise AssertionError("prune must not boot a server")

    with CloudStandin(no_servers, orchestration=orchestration) as c:
        c.conn = openstack.connect(**c.cloud_config()["auth"], region_name="RegionOne")
        yield c


def templates(cloud, count: int) -> list[dict]:
    """`count` complete template images, oldest first, as `fab bake-template` leaves them."""
    made = []
    for n in range(count):
        img = cloud.state.new_image(
            f"{TEMPLATE_NAME}-v1-2026010{n + 1}T000000Z",
            status="active",
            properties={bake.P_NAME: TEMPLATE_NAME, bake.P_STATE: "complete"},
        )
        img["created_at"] = f"2026-01-0{n + 1}T00:00:00Z"
        made.append(img)
    return made


def image_names(cloud) -> set[str]:
    with cloud.state.lock:
        return {i["name"] for i in cloud.state.images.values() if i.get(bake.P_NAME) == TEMPLATE_NAME}


@pytest.fixture()
def stack_using(orchestration):
    """Create the example stack `pulumi up` would make, booting image `image_id`; delete at the end."""
    created = []

    def create(image_id: str, example: str = stack_names()[0]) -> str:
        template = without_glance(render(example).template)
        wait_no_deletions(orchestration)
        name = f"queue-workers-{example}-prune-{uuid.uuid4().hex[:8]}"
        resp = orchestration.post(
            "/stacks",
            json={
                "stack_name": name,
                "template": template,
                "environment": NO_NOVA_ENVIRONMENT,
                "timeout_mins": 5,
                "parameters": {
                    hot.P_IMAGE: image_id,
                    hot.P_SECURITY_GROUP: "queue-workers-sg",
                    hot.P_CREDENTIALS_ENV: "T1NfQVVUSF9UWVBFPW5vbmUK",
                    hot.P_TEMPLATE_PROPERTIES: {bake.P_NAME: TEMPLATE_NAME},
                    hot.P_TEMPLATE_LABEL: f"{TEMPLATE_NAME}-v1 abababababab",
                },
            },
        )
        path = f"/stacks/{name}/{resp.json()['stack']['id']}"
        created.append(path)
        stack = wait_stack(orchestration, path)
        assert stack["stack_status"] == "CREATE_COMPLETE", stack.get("stack_status_reason")
        return path

    yield create
    for path in created:
        orchestration.delete(path, raise_exc=False)
    for path in created:
        assert wait_stack(orchestration, path)["stack_status"] == "DELETE_COMPLETE"


def test_prune_keeps_the_image_a_stack_boots_and_deletes_it_once_the_stack_is_gone(
    cloud, stack_using, orchestration
):
    old, middle, newest = templates(cloud, 3)
    path = stack_using(old["id"])
    # Heat lists the stack without its parameters, and its template names the image only by
    # `get_param`: what prune must find is in the full stack record.
    listed = [s for s in orchestration.get("/stacks").json()["stacks"] if path.endswith(s["id"])]
    assert listed and "parameters" not in listed[0]
    assert old["id"] not in yaml.safe_dump(orchestration.get(f"{path}/template").json())

    result = bake.prune(cloud.conn, keep=1)
    assert result["kept"] == [newest["name"]]
    assert result["in_use"] == [old["name"]]
    assert result["deleted"] == [middle["name"]]
    assert "stacks checked" in result["checked"]
    assert image_names(cloud) == {old["name"], newest["name"]}

    orchestration.delete(path)
    assert wait_stack(orchestration, path)["stack_status"] == "DELETE_COMPLETE"
    result = bake.prune(cloud.conn, keep=1)
    assert result["deleted"] == [old["name"]] and result["in_use"] == []
    assert image_names(cloud) == {newest["name"]}


def test_fab_prune_templates_says_which_image_a_stack_keeps(cloud, stack_using, tmp_path):
    old, newest = templates(cloud, 2)
    stack_name = stack_using(old["id"]).split("/")[2]
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"standin": cloud.cloud_config()}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    fab = [str(Path(sys.executable).with_name("fab")), "-r", str(REPO)]
    run = subprocess.run(
        [*fab, "prune-templates", "--cloud", "standin", "--keep", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert f"keeping {old['name']} ({old['id']}): in use by stack {stack_name}" in run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["in_use"] == [old["name"]]
    assert image_names(cloud) == {old["name"], newest["name"]}


def test_a_stack_prune_cannot_read_stops_the_prune(cloud, stack_using):
    """A stack whose record Heat refuses to show might boot any image: prune deletes nothing and
    names the stack."""
    old, _, _ = templates(cloud, 3)
    stack_name = stack_using(old["id"]).split("/")[2]
    before = image_names(cloud)
    cloud.state.faults.add("stack.forbidden")
    with pytest.raises(
        bake.BakeError, match=f"cannot read stack {stack_name}: .*not authorized.*; not pruning"
    ):
        bake.prune(cloud.conn, keep=1)
    assert image_names(cloud) == before

"""The whole loop on the local cloud, nothing stood in: the consumer template baked by
:class:`images.bake.Bake` (a builder server booted from debian-12, the Fabric steps over SSH, a
Nova snapshot), the local stack deployed by :class:`devenv.pulumi_local.LocalDeployment`, a backlog
posted to the stack's queue in the Zaqar behind Keystone, the stack's own monitor server scaling
the Heat group up, the consumers in the booted servers (real cloud-init, unit and container, their
own credential) draining it, the monitor scaling back down, and destroy leaving the project as it
was (the template image stays). The steps are :func:`devenv.cloud_demo.run_loop`'s (what
``python -m devenv cloud-demo`` shows a person).

Messages handled are counted from the consumers' own logs (``docker logs`` over SSH, read while
each member lives): N produced, N distinct handled, duplicates counted and printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cloud_harness"))
from harness_testlib import Project, project_resources

pytestmark = pytest.mark.cloud


def test_the_whole_loop(cloud, tmp_path):
    from devenv.cloud_demo import MESSAGES, MIN_SIZE, run_loop

    project = Project(cloud.session("local"))
    before = project_resources(project)
    r = run_loop(cloud, tmp_path, out=lambda msg: print(msg, flush=True))

    assert r["template_image_id"] == r["template"]["template_image_id"]
    assert r["members_before"] == MIN_SIZE
    assert len(set(r["posted"])) == MESSAGES
    assert r["max_members"] > MIN_SIZE, "the monitor never grew the group"
    missing = set(r["posted"]) - set(r["done"])
    assert not missing, f"{len(missing)} messages not handled, e.g. {sorted(missing)[:5]}"
    assert r["members_after"] == MIN_SIZE
    assert r["dead_letters"] == 0
    after = project_resources(project)
    # The bake's template stays (as a bake's does); everything else is as it was. A template an
    # earlier test of the session baked from the same content is reused, and then nothing is new.
    baked = set() if r["template"]["reused"] else {r["template"]["template_image_id"]}
    assert after["glance images"] - before["glance images"] == baked
    after["glance images"] = before["glance images"]
    assert after == before, {
        k: (after[k] - before[k], before[k] - after[k]) for k in after if after[k] != before[k]
    }

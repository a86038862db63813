"""The HOT template of every example stack goes through Heat's own engine, offline.

The validator runs in the Heat venv (openstack-heat 27); see heat_validate.py for what it stubs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from infra_testlib import STACKS, heat_python, rendered

from infra import hot

VALIDATOR = Path(__file__).with_name("heat_validate.py")


def run_validator(paths: list[Path]) -> dict[str, dict]:
    py = heat_python()
    if not py.exists():
        pytest.fail(f"the Heat venv is missing ({py}): run `make venv-openstack` (make test does)")
    proc = subprocess.run(
        [str(py), str(VALIDATOR), *map(str, paths)], capture_output=True, text=True, timeout=300
    )
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            results[Path(rec["file"]).name] = rec
    assert len(results) == len(paths), proc.stdout + proc.stderr
    assert proc.returncode == (0 if all(r["ok"] for r in results.values()) else 1)
    return results


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict[str, dict]:
    """One validator run for every template: each stack, its member, and deliberately broken ones."""
    d = tmp_path_factory.mktemp("hot")
    paths = []
    for name in STACKS:
        t = rendered(name).template
        (d / f"{name}.yaml").write_text(hot.dump(t))
        (d / f"{name}-member.yaml").write_text(hot.dump(hot.member_template(t)))
        paths += [d / f"{name}.yaml", d / f"{name}-member.yaml"]
    good = rendered(STACKS[0]).template
    broken = {
        # a property Heat does not know on the scaling group
        "broken-group-property.yaml": _edit(
            good, lambda t: t["resources"][hot.GROUP]["properties"].update({"max_sise": 3})
        ),
        # a scaling policy pointing at a resource that does not exist
        "broken-reference.yaml": _edit(
            good,
            lambda t: t["resources"][hot.SCALE_UP]["properties"].update(
                {"auto_scaling_group_id": {"get_resource": "no_such_group"}}
            ),
        ),
        # an adjustment type Heat does not allow
        "broken-allowed-value.yaml": _edit(
            good, lambda t: t["resources"][hot.SCALE_DOWN]["properties"].update({"adjustment_type": "halve"})
        ),
        # a retired resource type (Senlin is HIDDEN in Heat 27)
        "broken-hidden-type.yaml": _edit(
            good,
            lambda t: t["resources"].update(
                {
                    "cluster": {
                        "type": "OS::Senlin::Cluster",
                        "properties": {"profile": "p", "desired_capacity": 1},
                    }
                }
            ),
        ),
    }
    member_broken = hot.member_template(good)
    member_broken["resources"]["member"]["properties"]["flavour"] = "m1.small"
    broken["broken-member.yaml"] = member_broken
    for fname, t in broken.items():
        (d / fname).write_text(hot.dump(t))
        paths.append(d / fname)
    return run_validator(paths)


def _edit(template: dict, change) -> dict:
    t = yaml.safe_load(hot.dump(template))
    change(t)
    return t


@pytest.mark.parametrize("name", STACKS)
def test_heat_accepts_each_stack_template(verdicts, name):
    assert verdicts[f"{name}.yaml"]["ok"], verdicts[f"{name}.yaml"]["error"]


@pytest.mark.parametrize("name", STACKS)
def test_heat_accepts_each_group_member(verdicts, name):
    assert verdicts[f"{name}-member.yaml"]["ok"], verdicts[f"{name}-member.yaml"]["error"]


@pytest.mark.parametrize(
    "fname,words",
    [
        ("broken-group-property.yaml", "max_sise"),
        ("broken-reference.yaml", "no_such_group"),
        ("broken-allowed-value.yaml", "halve"),
        ("broken-hidden-type.yaml", "OS::Senlin::Cluster"),
        ("broken-member.yaml", "flavour"),
    ],
)
def test_heat_rejects_broken_templates(verdicts, fname, words):
    v = verdicts[fname]
    assert not v["ok"] and words in v["error"], v

"""The Pulumi program of every example stack under Pulumi's own mocks (no cloud, no CLI)."""

from __future__ import annotations

import base64
import json
import re

import pytest
import yaml

from infra import hot
from infra.config import ConfigError
from infra.mocks import MOCK_IMAGE_ID, MOCK_SECRET, baked_image
from infra.render import render

COMPONENTS = {
    "queue-workers:index:" + n
    for n in ("WorkQueue", "TemplateImage", "Network", "Credentials", "WorkerGroup", "MonitorServer")
}
PARENT = {  # child type -> the component that must own it
    "pulumi-python:dynamic/queue-workers:QueuePair": "queue-workers:index:WorkQueue",
    "openstack:networking/secGroup:SecGroup": "queue-workers:index:Network",
    "openstack:networking/secGroupRule:SecGroupRule": "queue-workers:index:Network",
    "openstack:identity/applicationCredential:ApplicationCredential": "queue-workers:index:Credentials",
    "openstack:orchestration/stackV1:StackV1": "queue-workers:index:WorkerGroup",
    "openstack:compute/instance:Instance": "queue-workers:index:MonitorServer",
}


def of_type(r, suffix):
    return [x for x in r.resources if x.type.endswith(suffix)]


def one(r, suffix):
    found = of_type(r, suffix)
    assert len(found) == 1, [x.name for x in found]
    return found[0]


def test_resource_graph_and_parenting(stack):
    cfg = yaml.safe_load(open(f"Pulumi.{stack.stack}.yaml"))["config"]
    monitor = cfg.get("queue-workers:monitorEnabled", True)
    types = [r.type for r in stack.resources]
    expected_components = COMPONENTS if monitor else COMPONENTS - {"queue-workers:index:MonitorServer"}
    assert {t for t in types if t.startswith("queue-workers:index:")} == expected_components
    for r in stack.resources:
        if r.type in expected_components:
            assert not r.custom and r.parent_types == ["pulumi:pulumi:Stack"], r
        elif r.type == "pulumi:providers:openstack":
            assert r.parent_types == ["pulumi:pulumi:Stack"]
        else:
            assert r.type in PARENT, f"undeclared kind of resource {r.type}"
            assert r.parent_types[-1] == PARENT[r.type], (r.name, r.urn)
    assert types.count("openstack:identity/applicationCredential:ApplicationCredential") == (
        2 if monitor else 1
    )
    assert types.count("openstack:compute/instance:Instance") == (1 if monitor else 0)


def test_provider_from_the_stack_cloud_and_region(stack):
    prov = one(stack, "pulumi:providers:openstack")
    cfg = yaml.safe_load(open(f"Pulumi.{stack.stack}.yaml"))["config"]
    assert prov.inputs["cloud"] == cfg["queue-workers:cloud"]
    assert prov.inputs["region"] == cfg["queue-workers:region"]
    for r in stack.resources:
        if r.custom and r.type.startswith("openstack:"):
            assert r.provider and "pulumi:providers:openstack::openstack" in r.provider, (r.type, r.provider)


def test_template_image_looked_up_by_name_and_properties(stack):
    cfg = yaml.safe_load(open(f"Pulumi.{stack.stack}.yaml"))["config"]
    calls = [a for t, a in stack.calls if t == "openstack:images/getImage:getImage"]
    assert len(calls) == 1
    assert calls[0]["mostRecent"] is True and calls[0]["region"] == cfg["queue-workers:region"]
    assert re.search(calls[0]["nameRegex"], "queue-workers-consumer-v1-20261123-190000")
    assert not re.search(calls[0]["nameRegex"], "queue-workers-consumer-old")
    assert calls[0]["properties"] == {
        "qw_template_name": "queue-workers-consumer",
        "qw_bake_state": "complete",
        **cfg.get("queue-workers:templateImageProperties", {}),
    }
    # reads only: the image, and the flavors the stack boots it on (checked against its min_disk)
    assert {t for t, _ in stack.calls} == {
        "openstack:images/getImage:getImage",
        "openstack:compute/getFlavor:getFlavor",
    }


def test_queue_pair_carries_policy_and_cloud(stack):
    q = one(stack, "QueuePair")
    cfg = yaml.safe_load(open(f"Pulumi.{stack.stack}.yaml"))["config"]
    assert q.inputs["name"] == cfg["queue-workers:queueName"]
    if cfg.get("queue-workers:queueBackend", "zaqar") == "zaqar":
        assert (
            q.inputs["cloud"] == cfg["queue-workers:cloud"]
            and q.inputs["region"] == cfg["queue-workers:region"]
        )
    else:  # the broker amqpUrl names, not the cloud (test_infra_amqp.py)
        assert q.inputs["backend"] == "amqp" and q.inputs["cloud"] == "" and q.inputs["url"]
    assert q.inputs["policy"]["claim_ttl"] == cfg["queue-workers:claimTtl"]
    assert q.inputs["policy"]["max_claims"] == cfg["queue-workers:maxClaims"]
    assert "__provider" in q.inputs  # the provider class pickled by reference


def test_security_group_no_ingress_but_listed_ssh(stack):
    cfg = yaml.safe_load(open(f"Pulumi.{stack.stack}.yaml"))["config"]
    sg = one(stack, "SecGroup")
    assert sg.inputs["deleteDefaultRules"] is True
    rules = of_type(stack, "SecGroupRule")
    ingress = [r.inputs for r in rules if r.inputs["direction"] == "ingress"]
    egress = [r.inputs for r in rules if r.inputs["direction"] == "egress"]
    assert {e["ethertype"] for e in egress} == {"IPv4", "IPv6"}
    assert sorted(i["remoteIpPrefix"] for i in ingress) == sorted(cfg.get("queue-workers:sshCidrs", []))
    for i in ingress:
        assert (i["protocol"], i["portRangeMin"], i["portRangeMax"]) == ("tcp", 22, 22)


def test_worker_group_stack(stack):
    st = one(stack, "StackV1")
    assert st.inputs["name"] == f"queue-workers-{stack.stack}"
    assert yaml.safe_load(st.inputs["templateOpts"]["Bin"]) == stack.template
    params = st.inputs["parameters"]
    assert params["image"] == MOCK_IMAGE_ID
    assert params["security_group"] == one(stack, "SecGroup").name + "-id"
    props = json.loads(params["template_image_properties"])
    assert props["qw_template_name"] == "queue-workers-consumer" and props["qw_bake_state"] == "complete"
    assert "os_hash_value" not in props  # only the bake's own properties
    assert params["template_image"] == "queue-workers-consumer-v1 " + "ab" * 6  # fits Nova's 255
    creds = base64.b64decode(params["credentials_env_b64"]).decode()
    assert "OS_AUTH_TYPE=v3applicationcredential" in creds
    assert "OS_APPLICATION_CREDENTIAL_ID=credentials-consumer-id" in creds
    assert f"OS_APPLICATION_CREDENTIAL_SECRET={MOCK_SECRET}" in creds
    assert stack.template["parameters"]["credentials_env_b64"]["hidden"] is True
    assert MOCK_SECRET not in st.inputs["templateOpts"]["Bin"]


def test_hot_template_shape(stack):
    cfg = yaml.safe_load(open(f"Pulumi.{stack.stack}.yaml"))["config"]
    t = stack.template
    res = t["resources"]
    group = res[hot.GROUP]["properties"]
    assert res[hot.GROUP]["type"] == "OS::Heat::AutoScalingGroup"
    assert (
        group["min_size"] == cfg["queue-workers:minSize"]
        and group["max_size"] == cfg["queue-workers:maxSize"]
    )
    assert group["rolling_updates"]["max_batch_size"] >= 1
    server = group["resource"]["properties"]
    assert group["resource"]["type"] == "OS::Nova::Server"
    assert server["flavor"] == cfg["queue-workers:flavor"] and server["image"] == {"get_param": "image"}
    assert server["networks"] == [{"network": cfg["queue-workers:network"]}]
    assert server["scheduler_hints"] == {"group": {"get_resource": hot.SERVER_GROUP}}
    assert ("key_name" in server) == bool(cfg.get("queue-workers:keyPair"))
    assert res[hot.SERVER_GROUP]["properties"]["policies"] == ["soft-anti-affinity"]
    assert res[hot.SCALE_UP]["properties"]["scaling_adjustment"] > 0
    assert res[hot.SCALE_DOWN]["properties"]["scaling_adjustment"] < 0
    assert set(t["outputs"]) >= {hot.OUT_SCALE_UP_URL, hot.OUT_SCALE_DOWN_URL, hot.OUT_CURRENT_SIZE}
    ud = yaml.safe_load(server["user_data"]["str_replace"]["template"].split("\n", 1)[1])
    env = dict(
        line.split("=", 1)
        for line in ud["write_files"][0]["content"].splitlines()
        if not line.startswith("#")
    )
    assert (
        env["QW_QUEUE"] == cfg["queue-workers:queueName"] and env["QW_REGION"] == cfg["queue-workers:region"]
    )
    assert env["QW_CLAIM_TTL"] == str(cfg["queue-workers:claimTtl"])
    kind, target = cfg["queue-workers:handler"].split(":", 1)
    assert env[{"exec": "QW_EXEC", "http": "QW_HTTP", "python": "QW_PYTHON"}[kind]] == target
    assert env["QW_NO_BULK_DELETE"] == "true"  # the access rules refuse ?ids= bulk deletes
    assert (
        ud["write_files"][1]["append"] is True
        and ud["write_files"][1]["path"] == ud["write_files"][0]["path"]
    )
    assert ["systemctl", "start", "--no-block", hot.CONSUMER_UNIT] in ud["runcmd"]


def test_outputs_and_secrets(stack):
    seen = stack.inspected
    assert seen["scale_up_url"].endswith(
        f"/stacks/queue-workers-{stack.stack}/workers-stack-id/resources/{hot.SCALE_UP}/signal"
    )
    assert seen["scale_down_url"].endswith(f"/resources/{hot.SCALE_DOWN}/signal")
    assert seen["consumer_secret_is_secret"] is True and seen["consumer_secret"] == MOCK_SECRET
    # what the engine is handed as secret (encrypted in state, masked in output)
    st = one(stack, "StackV1")
    assert st.secret_inputs and all(p.startswith("parameters") for p in st.secret_inputs), st.secret_inputs
    assert "templateOpts" not in " ".join(st.secret_inputs)  # the template stays reviewable
    for s in stack.resources:
        if s.type.endswith("ApplicationCredential"):
            assert "secret" not in s.inputs  # generated by Keystone, never chosen here
    if "monitor_user_data" in seen:
        assert seen["monitor_secret_is_secret"] is True
        assert "userData" in one(stack, "Instance").secret_inputs
        ud = yaml.safe_load(seen["monitor_user_data"].split("\n", 1)[1])
        content = ud["write_files"][0]["content"]
        env = dict(line.split("=", 1) for line in content.splitlines() if not line.startswith("#"))
        assert f"# scale-up signal URL: {seen['scale_up_url']}" in content.splitlines()
        assert env["QW_GROUP"] == f"queue-workers-{stack.stack}" and env["QW_ACTUATOR"] == "heat"
        creds = base64.b64decode(ud["write_files"][1]["content"]).decode()
        assert "OS_APPLICATION_CREDENTIAL_ID=credentials-monitor-id" in creds


def test_credentials_access_rules(stack):
    cfg = yaml.safe_load(open(f"Pulumi.{stack.stack}.yaml"))["config"]
    q = cfg["queue-workers:queueName"]
    creds = {c.name: c.inputs for c in of_type(stack, "ApplicationCredential")}
    consumer = creds["credentials-consumer"]
    assert consumer["unrestricted"] is False and consumer["roles"] == ["member"]
    paths = {(r["method"], r["path"]) for r in consumer["accessRules"]}
    for queue in (q, q + "-dlq"):
        assert ("POST", f"/v2/queues/{queue}/claims") in paths
        assert ("DELETE", f"/v2/queues/{queue}/messages/*") in paths
    assert {r["service"] for r in consumer["accessRules"]} == {"messaging"}
    assert all(
        r["path"].startswith((f"/v2/queues/{q}/", f"/v2/queues/{q}-dlq/")) for r in consumer["accessRules"]
    )
    assert not any(
        r["method"] == "DELETE" and r["path"] in (f"/v2/queues/{q}", f"/v2/queues/{q}-dlq")
        for r in consumer["accessRules"]
    )
    if "credentials-monitor" in creds:
        rules = creds["credentials-monitor"]["accessRules"]
        assert {(r["service"], r["method"]) for r in rules if r["service"] == "messaging"} == {
            ("messaging", "GET")
        }
        for r in rules:
            if r["service"] == "orchestration":
                assert r["path"].startswith(f"/v1/*/stacks/queue-workers-{stack.stack}")


def test_missing_template_image_names_image_region_and_fix():
    unfinished = baked_image(qw_bake_state="baking")
    other = baked_image("another-template", image_id="x")
    with pytest.raises(Exception) as e:
        render("iad", images=[unfinished, other])
    msg = str(e.value)
    assert "'queue-workers-consumer'" in msg and "'IAD'" in msg and "fab bake-template" in msg


def test_most_recent_matching_image_is_used():
    r = render(
        "iad",
        images=[
            baked_image(image_id="old"),
            baked_image(image_id="new"),
            baked_image(image_id="v2", version=2),
        ],
    )  # iad asks for version 1
    assert one(r, "StackV1").inputs["parameters"]["image"] == "new"


def test_config_error_raised_before_any_resource():
    with pytest.raises(ConfigError) as e:
        render(
            "iad", cfg_override={"cloud": "c", "region": "R", "flavor": "f", "network": "n", "claimTtl": 30}
        )
    assert e.value.key == "claimTtl"
    r = render("dfw")  # a later good run still works in the same process
    assert of_type(r, "StackV1")


def test_monitor_can_be_turned_off():
    base = {"cloud": "c", "region": "R", "flavor": "f", "network": "n", "identityEndpoint": "https://k/v3"}
    on = render("iad", cfg_override=base)
    off = render("iad", cfg_override={**base, "monitorEnabled": False})
    assert len(of_type(on, "Instance")) == 1 and not of_type(off, "Instance")
    assert len(of_type(off, "ApplicationCredential")) == 1


def test_identity_endpoint_needed_when_clouds_yaml_has_none(tmp_path, monkeypatch):
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    (tmp_path / "clouds.yaml").write_text("clouds: {}\n")
    with pytest.raises(ConfigError) as e:
        render("iad", cfg_override={"cloud": "nowhere", "region": "R", "flavor": "f", "network": "n"})
    assert e.value.key == "identityEndpoint" and "'nowhere'" in str(e.value)


def test_identity_endpoint_from_clouds_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    (tmp_path / "clouds.yaml").write_text(
        "clouds:\n  lab:\n    auth: {auth_url: 'https://keystone.lab.example/v3', username: u, password: p,"
        " project_name: p}\n    region_name: R\n"
    )
    r = render("iad", cfg_override={"cloud": "lab", "region": "R", "flavor": "f", "network": "n"})
    creds = base64.b64decode(one(r, "StackV1").inputs["parameters"]["credentials_env_b64"]).decode()
    assert "OS_AUTH_URL=https://keystone.lab.example/v3" in creds


def test_entry_point_declares_the_stack_as_pulumi_runs_it():
    """`pulumi up` runs infra/ (its __main__.py) by path with the engine configured: it must declare."""
    import runpy

    import pulumi
    from infra_testlib import REPO
    from pulumi.runtime import config as rc
    from pulumi.runtime import mocks as pm

    from infra.mocks import RecordingMonitor, StackMocks
    from infra.render import flatten

    mocks = StackMocks(stack="iad")
    pulumi.runtime.set_mocks(
        mocks, project="queue-workers", stack="iad", preview=False, monitor=RecordingMonitor(mocks)
    )
    config, secrets = flatten(yaml.safe_load((REPO / "Pulumi.iad.yaml").read_text()))
    rc.set_all_config(config, secrets)

    @pm.test
    def run():
        runpy.run_path(str(REPO / "infra"), run_name="__main__")

    run()
    assert {r.type for r in mocks.resources} >= {
        "openstack:orchestration/stackV1:StackV1",
        "queue-workers:index:WorkQueue",
    }


def _env_names(mode: str) -> set[str]:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "workload", mode, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in __import__("os").environ.items() if not k.startswith("QW_")},
    )
    assert out.returncode == 0, out.stderr
    return set(re.findall(r"\$(QW_[A-Z0-9_]+)", out.stdout))


def test_env_files_use_the_workload_cli_own_variable_names():
    """Every QW_* setting the servers get is an option `python -m workload consumer|monitor` reads."""
    from infra.components.monitor import monitor_env
    from infra.config import load

    base = {"cloud": "c", "region": "R", "flavor": "f", "network": "n"}
    consumer_names, monitor_names = _env_names("consumer"), _env_names("monitor")
    for over in ({}, {"handler": "http:http://x/y"}, {"handler": "python:a.b:c"}):
        assert set(hot.consumer_env(load({**base, **over}))) <= consumer_names
    for policy in ("threshold", "target"):
        assert set(monitor_env(load({**base, "scalingPolicy": policy}), "s")) <= monitor_names

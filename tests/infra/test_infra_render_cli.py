"""`python -m infra render --stack NAME`, as a user runs it (a real subprocess, no cloud)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from infra_testlib import REPO, STACKS


def run(*argv, cwd=REPO):
    env = {k: v for k, v in os.environ.items() if k != "PULUMI_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "infra", *argv], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.parametrize("name", STACKS)
def test_render_prints_template_on_stdout_and_resources_on_stderr(name):
    p = run("render", "--stack", name)
    assert p.returncode == 0, p.stderr
    t = yaml.safe_load(p.stdout)
    assert t["heat_template_version"] and "group" in t["resources"]
    assert f"stack {name}:" in p.stderr
    assert (
        "openstack:orchestration/stackV1:StackV1" in p.stderr
        and "parent=queue-workers:index:WorkerGroup" in p.stderr
    )
    assert "Warning" not in p.stderr and "Traceback" not in p.stderr


def test_render_member():
    p = run("render", "--stack", STACKS[0], "--member")
    assert p.returncode == 0 and yaml.safe_load(p.stdout)["resources"]["member"]["type"] == "OS::Nova::Server"


def test_unknown_stack_lists_the_ones_that_exist():
    p = run("render", "--stack", "nowhere")
    assert p.returncode == 2 and p.stdout == ""
    assert "no stack 'nowhere'" in p.stderr and ", ".join(STACKS) in p.stderr


def test_bad_stack_config_names_the_key(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text("name: queue-workers\nruntime: python\n")
    bad = yaml.safe_load((REPO / "Pulumi.iad.yaml").read_text())
    bad["config"]["queue-workers:claimTtl"] = 30
    (tmp_path / "Pulumi.bad.yaml").write_text(yaml.safe_dump(bad))
    p = run("render", "--stack", "bad", "--project-dir", str(tmp_path))
    assert (
        p.returncode == 2
        and "queue-workers:claimTtl='30' is not allowed: an integer from 60 to 43200" in p.stderr
    )


def test_help_and_settings():
    p = run("render", "--help")
    assert p.returncode == 0 and "--stack" in p.stdout and "Pulumi.<NAME>.yaml" in p.stdout
    s = run("settings")
    assert s.returncode == 0 and "claimTtl" in s.stdout and "from 60 to 43200" in s.stdout
    assert run("stacks").stdout.split() == STACKS


def test_encrypted_values_render_as_placeholders(tmp_path):
    """A stack with `pulumi config set --secret --path consumerSecretEnv.QW_TOKEN ...` still renders."""
    (tmp_path / "Pulumi.yaml").write_text("name: queue-workers\nruntime: python\n")
    doc = yaml.safe_load((REPO / "Pulumi.iad.yaml").read_text())
    doc["config"]["queue-workers:consumerSecretEnv"] = {"QW_TOKEN": {"secure": "v1:ENCRYPTEDBLOB"}}
    (tmp_path / "Pulumi.sec.yaml").write_text(yaml.safe_dump(doc))
    p = run("render", "--stack", "sec", "--project-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "ENCRYPTEDBLOB" not in p.stdout + p.stderr
    # stored in plain text instead: refused, and the value is not echoed
    doc["config"]["queue-workers:consumerSecretEnv"] = {"QW_TOKEN": "plain-s3cret"}
    (tmp_path / "Pulumi.plain.yaml").write_text(yaml.safe_dump(doc))
    p = run("render", "--stack", "plain", "--project-dir", str(tmp_path))
    assert p.returncode == 2 and "--secret" in p.stderr and "plain-s3cret" not in p.stderr


def test_render_env_shows_the_monitor_policy_and_its_priors():
    p = run("render", "--stack", "dfw", "--env", "monitor")
    assert p.returncode == 0, p.stderr
    env = dict(line.split("=", 1) for line in p.stdout.splitlines() if not line.startswith("#"))
    assert env["QW_POLICY"] == "target" and env["QW_ACTUATOR"] == "heat"
    assert (env["QW_BOOT_TIME"], env["QW_SERVICE_TIME"], env["QW_IDLE_TO_ZERO"]) == ("180.0", "20.0", "600.0")
    assert "OS_APPLICATION_CREDENTIAL_SECRET" not in p.stdout

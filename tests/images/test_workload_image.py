"""The built workload image (make image) runs the producer and consumer against the local Zaqar."""
from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from devenv.builder import image

pytestmark = pytest.mark.builder


def _podman(*args, timeout=120, check=False):
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


def _env_args(zaqar, **extra):
    env = {**zaqar.env(), **extra}
    return [a for k, v in env.items() for a in ("-e", f"{k}={v}")]


def test_image_is_small_non_root_with_a_healthcheck(workload_archive):
    record = json.loads(workload_archive.with_suffix(".json").read_text())
    info = json.loads(_podman("image", "inspect", record["tag"], check=True).stdout)[0]
    cfg = info["Config"]
    assert cfg["User"] == "worker"
    assert cfg["Entrypoint"] == ["python3", "-m", "workload"]
    assert info["Healthcheck"]["Test"][0] == "CMD"
    # Debian python3 + the five runtime packages: 189 MB measured; not the full perl (bookworm's
    # usrmerge brings 50 MB of it; only the essential perl-base stays), nor a system pip.
    assert record["archive_bytes"] < 220e6
    listed = _podman("run", "--rm", "--entrypoint", "dpkg-query", record["tag"], "-W",
                     "-f", "${db:Status-Abbrev} ${Package}\n", "perl", "libperl5.36", "usrmerge", "python3-pip")
    installed = [line.split()[-1] for line in listed.stdout.splitlines() if line.startswith("ii")]
    assert installed == [], f"installed in the image: {installed}"
    # The archive is a docker-archive (what `docker load` reads): one manifest naming the tag.
    import tarfile
    with tarfile.open(workload_archive) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == [record["tag"].removeprefix("localhost/")] or \
        manifest[0]["RepoTags"] == [record["tag"]]


def test_image_producer_and_consumer_work_against_local_zaqar(zaqar, workload_archive):
    tag = json.loads(workload_archive.with_suffix(".json").read_text())["tag"]
    queue = f"img-{uuid.uuid4().hex[:10]}"
    prod = _podman("run", "--rm", "--network", "host", *_env_args(zaqar, QW_QUEUE=queue), tag,
                   "producer", "--ensure", "--count", "6", "-t", "0.01", "--invalid-share", "0",
                   "--progress-every", "0")
    assert prod.returncode == 0, prod.stderr
    assert json.loads(prod.stdout.splitlines()[-1])["sent"] == 6

    # The consumer as the baked unit runs it: settings only from the environment (the env file).
    con = _podman("run", "--rm", "--network", "host",
                  *_env_args(zaqar, QW_QUEUE=queue, QW_IDLE_EXIT="2", QW_EXEC="cat", QW_BATCH="3"),
                  tag, "consumer")
    assert con.returncode == 0, con.stderr
    events = [json.loads(x) for x in con.stdout.splitlines() if x.startswith("{")]
    assert events[-1]["event"] == "summary" and events[-1]["done"] == 6

    st = _podman("run", "--rm", "--network", "host", *_env_args(zaqar, QW_QUEUE=queue), tag, "status", "--json")
    assert st.returncode == 0, st.stderr


def test_healthcheck_reports_a_running_consumer_healthy(zaqar, workload_archive):
    tag = json.loads(workload_archive.with_suffix(".json").read_text())["tag"]
    name = f"qw-hc-{uuid.uuid4().hex[:8]}"
    queue = f"img-{uuid.uuid4().hex[:10]}"
    run = _podman("run", "-d", "--name", name, "--network", "host",
                  *_env_args(zaqar, QW_QUEUE=queue, QW_EXEC="cat"), tag, "consumer", "--ensure")
    assert run.returncode == 0, run.stderr
    try:
        time.sleep(2)
        hc = _podman("healthcheck", "run", name)
        assert hc.returncode == 0, hc.stdout + hc.stderr
        _podman("kill", name)
        _podman("wait", name, timeout=30)
        hc = _podman("healthcheck", "run", name)
        assert hc.returncode != 0  # a stopped consumer is not healthy
    finally:
        _podman("rm", "-f", name)

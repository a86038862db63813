"""The built workload image (make image) runs the producer and consumer against the local Zaqar."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

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
    listed = _podman(
        "run",
        "--rm",
        "--entrypoint",
        "dpkg-query",
        record["tag"],
        "-W",
        "-f",
        "${db:Status-Abbrev} ${Package}\n",
        "perl",
        "libperl5.36",
        "usrmerge",
        "python3-pip",
    )
    installed = [line.split()[-1] for line in listed.stdout.splitlines() if line.startswith("ii")]
    assert installed == [], f"installed in the image: {installed}"
    # The archive is a docker-archive (what `docker load` reads): one manifest naming the tag.
    import tarfile

    with tarfile.open(workload_archive) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == [record["tag"].removeprefix("localhost/")] or manifest[0][
        "RepoTags"
    ] == [record["tag"]]


def test_image_producer_and_consumer_work_against_local_zaqar(zaqar, workload_archive):
    tag = json.loads(workload_archive.with_suffix(".json").read_text())["tag"]
    queue = f"img-{uuid.uuid4().hex[:10]}"
    prod = _podman(
        "run",
        "--rm",
        "--network",
        "host",
        *_env_args(zaqar, QW_QUEUE=queue),
        tag,
        "producer",
        "--ensure",
        "--count",
        "6",
        "-t",
        "0.01",
        "--invalid-share",
        "0",
        "--progress-every",
        "0",
    )
    assert prod.returncode == 0, prod.stderr
    assert json.loads(prod.stdout.splitlines()[-1])["sent"] == 6

    # The consumer as the baked unit runs it: settings only from the environment (the env file).
    con = _podman(
        "run",
        "--rm",
        "--network",
        "host",
        *_env_args(zaqar, QW_QUEUE=queue, QW_IDLE_EXIT="2", QW_EXEC="cat", QW_BATCH="3"),
        tag,
        "consumer",
    )
    assert con.returncode == 0, con.stderr
    events = [json.loads(x) for x in con.stdout.splitlines() if x.startswith("{")]
    assert events[-1]["event"] == "summary" and events[-1]["done"] == 6

    st = _podman(
        "run", "--rm", "--network", "host", *_env_args(zaqar, QW_QUEUE=queue), tag, "status", "--json"
    )
    assert st.returncode == 0, st.stderr


def _healthcheck(name: str) -> subprocess.CompletedProcess:
    return _podman("healthcheck", "run", name)


def _last_health_output(name: str) -> str:
    """What the image's check printed last (podman keeps it in the container's health log)."""
    health = json.loads(_podman("inspect", "--format", "{{json .State.Health}}", name).stdout)
    return health["Log"][-1]["Output"].strip()


def test_healthcheck_follows_the_consumer_and_the_monitor(zaqar, workload_archive):
    """Both long-running roles are healthy once they work on their queue, and a stopped one is not."""
    from devenv.procs import wait_until
    from workload.queues import open_queue

    tag = json.loads(workload_archive.with_suffix(".json").read_text())["tag"]
    queue = f"img-{uuid.uuid4().hex[:10]}"
    open_queue("zaqar", queue, **zaqar.queue_options).ensure()
    roles = {
        "consumer": ["consumer"],
        "monitor": ["monitor", "--dry-run", "-t", "0.5", "--consumer-log-dir", "/tmp"],
    }
    names = {role: f"qw-hc-{role}-{uuid.uuid4().hex[:8]}" for role in roles}
    try:
        for role, argv in roles.items():
            run = _podman(
                "run",
                "-d",
                "--name",
                names[role],
                "--network",
                "host",
                *_env_args(zaqar, QW_QUEUE=queue, QW_EXEC="cat"),
                tag,
                *argv,
            )
            assert run.returncode == 0, run.stderr
        for role, name in names.items():
            wait_until(
                lambda: _healthcheck(name).returncode == 0,
                timeout=60,
                what=f"the {role} container to be healthy",
            )
            assert _last_health_output(name).startswith(f"healthy: {role}: heartbeat")
            _podman("kill", name)
            _podman("wait", name, timeout=30)
            assert _healthcheck(name).returncode != 0  # a stopped one is not healthy
    finally:
        for name in names.values():
            _podman("rm", "-f", name)


def test_healthcheck_calls_a_consumer_or_monitor_that_never_reaches_its_queue_unhealthy(workload_archive):
    from devenv.procs import free_port

    tag = json.loads(workload_archive.with_suffix(".json").read_text())["tag"]
    env = [
        "-e",
        f"QW_ZAQAR_URL=http://127.0.0.1:{free_port()}",
        "-e",
        "QW_PROJECT=p",
        "-e",
        "QW_QUEUE=q",
        "-e",
        "QW_EXEC=cat",
    ]
    roles = {
        "consumer": ["consumer"],
        "monitor": ["monitor", "--dry-run", "-t", "0.5", "--consumer-log-dir", "/tmp"],
    }
    names = {role: f"qw-hc-dead-{role}-{uuid.uuid4().hex[:8]}" for role in roles}
    try:
        for role, argv in roles.items():
            # No start period: the image's 20 s grace would make `healthcheck run` report "starting".
            run = _podman(
                "run",
                "-d",
                "--name",
                names[role],
                "--health-start-period",
                "0s",
                "--network",
                "host",
                *env,
                tag,
                *argv,
            )
            assert run.returncode == 0, run.stderr
        time.sleep(3)  # running, and trying its queue
        for role, name in names.items():
            state = _podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            hc = _healthcheck(name)
            assert state == "true" and hc.returncode == 1, (state, hc.stdout, hc.stderr)
            assert _last_health_output(name).startswith(f"unhealthy: {role}: no heartbeat")
    finally:
        for name in names.values():
            _podman("rm", "-f", name)

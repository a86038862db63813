"""The local stand-ins themselves: started, answering, stopped by PID, and the CLI around them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[3]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_local_zaqar_starts_answers_and_stops_every_process_it_started():
    from devenv.zaqar import LocalZaqar

    z = LocalZaqar(gc_interval=0.5)
    with z:
        pids = z.pids()
        workdir = z.workdir
        assert set(pids) == {"redis", "zaqar", "gc"}
        assert requests.get(z.url + "/", timeout=5).status_code == 300
        url = z.url
    assert all(_gone(pid) for pid in pids.values())
    assert not workdir.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/", timeout=2)


def _run_cli(*argv):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "devenv", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize(
    "command,healthy_status,env_var",
    [
        ("zaqar", 300, "QW_ZAQAR_URL"),
        ("sqs", None, "QW_SQS_ENDPOINT_URL"),
        ("amqp", 200, "QW_AMQP_MANAGEMENT_URL"),
    ],
)
def test_python_m_devenv_runs_in_the_foreground_and_stops_on_ctrl_c(command, healthy_status, env_var):
    proc = _run_cli(command)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(lines)
        url = next(l.split()[-1] for l in lines if " listening on " in l)
        assert f"export {env_var}={url}" in text
        status = requests.get(url + "/", timeout=5).status_code
        if healthy_status:
            assert status == healthy_status
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert f"{command} stopped" in rest
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--help"], ["zaqar", "sqs", "amqp", "demo", "controlplane"]),
        (
            ["zaqar", "--help"],
            [
                "--venv",
                "QW_ZAQAR_VENV",
                "--project",
                "X-Project-ID",
                "--gc-interval",
                "garbage",
                "--workers",
                "--threads",
            ],
        ),
        (["sqs", "--help"], ["--region", "--port", "a free one"]),
        (["amqp", "--help"], ["--data-dir", "--consumer-timeout", "consumer_timeout", "--heartbeat"]),
        (["demo", "--help"], ["python -m devenv demo"]),  # the demo's own help, not ours
        (["controlplane", "--help"], ["python -m devenv controlplane", "--messaging", "--run-dir"]),
    ],
)
def test_every_subcommand_documents_its_options(argv, expected):
    out = subprocess.run(
        [sys.executable, "-m", "devenv", *argv], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert [e for e in expected if e not in text] == []


def test_a_missing_zaqar_virtualenv_is_named_with_the_fix(tmp_path):
    from devenv.zaqar import LocalZaqar, ZaqarNotInstalled

    with pytest.raises(ZaqarNotInstalled) as err:
        LocalZaqar(venv=tmp_path / "nowhere").start()
    assert "nowhere" in str(err.value) and "make venv-zaqar" in str(err.value)


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* shows them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.split(":")
                if state == "0A" and int(hexport, 16) == port:
                    found.add(addr)
    return found


def test_local_rabbitmq_listens_on_loopback_only(rabbitmq):
    """AMQP, management, Erlang distribution and epmd: every port on 127.0.0.1 (or ::1) only."""
    loopback = {"0100007F", "00000000000000000000000001000000"}
    ports = {
        "amqp": rabbitmq.amqp_port,
        "management": rabbitmq.port,
        "distribution": rabbitmq.dist_port,
        "epmd": rabbitmq.epmd_port,
    }
    seen = {name: _listening(port) for name, port in ports.items()}
    assert all(seen.values()), seen  # each one listens
    assert {name: addrs - loopback for name, addrs in seen.items()} == {name: set() for name in ports}


def test_local_rabbitmq_adds_users_with_their_own_rights(rabbitmq, queue_name):
    """A user made by add_user reaches its vhost through AMQP; refused where it has no right."""
    from workload.queues import QueueError, QueuePolicy, open_queue

    vhost = queue_name("vh")
    url = rabbitmq.add_user(
        "reader-" + vhost, "pw-" + vhost, vhost=vhost, configure="^$", write="^$", read=".*"
    )
    q = open_queue("amqp", "jobs", url=url, management_url=rabbitmq.management_url)
    with pytest.raises(QueueError) as err:
        q.ensure(QueuePolicy(max_claims=0))  # declaring needs configure rights
    assert err.value.status == 403

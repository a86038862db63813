"""What only RabbitMQ (the AMQP backend) must show, on a real broker: nothing lost when a consumer
is SIGKILLed or the broker restarts, poison messages dead-lettered after the delivery limit, long
handlers keep their deliveries, and bad URLs or credentials fail fast with exit 3 (or 2 for a URL
that is not one), naming the problem and never the password."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devenv.procs import json_records
from workload.queues import QueuePolicy, ServiceUnavailable, open_queue

REPO = Path(__file__).resolve().parents[3]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return value


def cli_env(rabbitmq, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QW_", "OS_"))}
    env.update(rabbitmq.env())
    env.update(extra)
    return env


def consumer(rabbitmq, queue: str, log: Path, *args: str, **env: str) -> subprocess.Popen:
    """``python -m workload consumer -b amqp`` on ``queue`` (sleep handler), logging to ``log``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workload",
            "consumer",
            "-b",
            "amqp",
            "-q",
            queue,
            "--python",
            "workload.handlers.builtin:sleep",
            "--log-file",
            str(log),
            *args,
        ],
        env=cli_env(rabbitmq, **env),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def done_seqs(log: Path) -> list[int]:
    """seq of every message the consumer logged as done (repeats included)."""
    if not log.exists():
        return []
    return [
        rec.get("seq")
        for rec in json_records(log.read_text())
        if rec.get("event") == "message" and rec.get("outcome") == "done"
    ]


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture
def amqp_queue(rabbitmq, queue_name):
    made = []

    def make(policy: QueuePolicy | None = None, **options):
        q = open_queue("amqp", queue_name("am"), **{**rabbitmq.queue_options, **options})
        q.ensure(policy or QueuePolicy(max_claims=5))
        made.append(q)
        return q

    yield make
    for q in made:
        try:
            q.drop()
            q.close()
        except Exception:  # cleanup must not hide the test's result
            pass


def test_a_consumer_sigkilled_mid_message_loses_nothing(rabbitmq, amqp_queue, tmp_path):
    q = amqp_queue()
    q.post([{"seq": 1, "work_s": 30}])
    proc = consumer(rabbitmq, q.name, tmp_path / "c.jsonl", "--batch", "1", "--prefetch", "0")
    try:
        wait_for(lambda: q.stats().claimed == 1, 30, "the consumer holds the message")
        proc.kill()  # SIGKILL: no drain, no release
        proc.wait(10)
        claim = wait_for(lambda: q.claim(limit=1), 15, "the message is back")
    finally:
        stop(proc)
    (m,) = claim.messages
    assert m.body == {"seq": 1, "work_s": 30}
    assert m.claim_count == 2  # the broker counted the first delivery
    q.delete(m, claim)
    wait_for(lambda: q.stats().total == 0, 10, "the queue is empty")


def test_a_broker_restart_loses_nothing_and_consumers_resume_by_themselves(rabbitmq, amqp_queue, tmp_path):
    q = amqp_queue()
    log = tmp_path / "c.jsonl"
    proc = consumer(rabbitmq, q.name, log, "--batch", "5", "--concurrency", "2")
    try:
        q.post([{"seq": i, "work_s": 0.02} for i in range(100)])
        wait_for(lambda: len(done_seqs(log)) >= 30, 60, "30 done before the restart")
        outage = []

        def post_while_down():
            start = time.monotonic()
            with pytest.raises(ServiceUnavailable) as err:
                q.post([{"seq": -1}])  # a post is never retried: it fails, and says why
            outage.append((time.monotonic() - start, str(err.value)))

        rabbitmq.restart(while_down=post_while_down)  # same ports and data
        took, error = outage[0]
        assert took < 15 and "Connection failed" in error and rabbitmq.workload[1] not in error
        q.post([{"seq": i, "work_s": 0.02} for i in range(100, 150)])  # the same driver reconnects
        wait_for(lambda: set(done_seqs(log)) >= set(range(150)), 120, "every message done")
        assert proc.poll() is None  # it rode out the outage
        assert -1 not in done_seqs(log)  # the failed post stored nothing
    finally:
        code = stop(proc)
    assert code == 0
    wait_for(lambda: q.stats().total == 0, 10, "the queue is empty")


def test_poison_messages_reach_the_dead_letter_queue_after_the_delivery_limit(rabbitmq, amqp_queue, tmp_path):
    q = amqp_queue(QueuePolicy(max_claims=3))
    q.post([{"seq": 1}, {"seq": 2}])
    log = tmp_path / "c.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workload",
            "consumer",
            "-b",
            "amqp",
            "-q",
            q.name,
            "--exec",
            "false",
            "--retry-delay",
            "0.05",
            "--log-file",
            str(log),
            "--idle-exit",
            "3",
        ],
        env=cli_env(rabbitmq),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.wait(60) == 0
    finally:
        stop(proc)
    dlq = q.dead_letter_queue()
    claim = wait_for(lambda: dlq.claim(limit=10), 10, "dead letters")
    assert sorted(m.body["seq"] for m in claim.messages) == [1, 2]  # moved by the broker, as posted
    attempts = [json.loads(line) for line in log.read_text().splitlines()]
    tries = [r["seq"] for r in attempts if r.get("event") == "message" and r.get("outcome") == "retry"]
    assert sorted(tries) == [1, 1, 1, 2, 2, 2]  # three deliveries each, then the broker moved them
    dlq.delete_many(claim.messages, claim)
    wait_for(lambda: q.stats().total == 0 and dlq.stats().total == 0, 10, "both queues empty")


def test_a_handler_longer_than_the_heartbeat_keeps_its_delivery(rabbitmq, amqp_queue, tmp_path):
    q = amqp_queue()
    q.post([{"seq": 7, "work_s": 4}])  # four heartbeat intervals of 1 s
    log = tmp_path / "c.jsonl"
    proc = consumer(
        rabbitmq, q.name, log, "--max-messages", "1", QW_AMQP_URL=rabbitmq.amqp_url + "?heartbeat=1"
    )
    try:
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        stop(proc)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    (msg,) = [r for r in records if r.get("event") == "message"]
    assert (msg["outcome"], msg["claim_count"]) == ("done", 1) and msg["duration_s"] >= 4
    summary = next(r for r in records if r.get("event") == "summary")
    assert (summary["claims_lost"], summary["delete_errors"]) == (0, 0)
    assert q.claim(limit=1) is None
    wait_for(lambda: q.stats().total == 0, 10, "the queue is empty")


def _ensure(rabbitmq, url: str, timeout: float = 60):
    """``python -m workload ensure -b amqp`` (an operator's first call) against ``url``."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "workload", "ensure", "-b", "amqp", "-q", "jobs"],
        env=cli_env(rabbitmq, QW_AMQP_URL=url),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, time.monotonic() - start


def test_refused_credentials_exit_3_at_once_without_the_password(rabbitmq):
    proc, took = _ensure(rabbitmq, f"amqp://qw:not-the-password-42@127.0.0.1:{rabbitmq.amqp_port}/%2F")
    assert proc.returncode == 3, proc.stderr
    assert "ACCESS_REFUSED" in proc.stderr and "'qw'" in proc.stderr
    assert "not-the-password-42" not in proc.stdout + proc.stderr
    assert took < 15  # refused is final: no retries


def test_a_consumer_with_refused_credentials_exits_3(rabbitmq, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workload",
            "consumer",
            "-b",
            "amqp",
            "-q",
            "jobs",
            "--python",
            "workload.handlers.builtin:noop",
        ],
        env=cli_env(rabbitmq, QW_AMQP_PASSWORD="wrong-secret-43"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert "ACCESS_REFUSED" in proc.stderr and "wrong-secret-43" not in proc.stdout + proc.stderr


def test_an_unreachable_broker_exits_3_within_the_retries(rabbitmq):
    from devenv.procs import free_port

    proc, took = _ensure(rabbitmq, f"amqp://qw:secret-44@127.0.0.1:{free_port()}/%2F")
    assert proc.returncode == 3, proc.stderr
    assert "Connection failed" in proc.stderr and "secret-44" not in proc.stdout + proc.stderr
    assert took < 45


@pytest.mark.parametrize(
    "url,expected",
    [
        ("http://127.0.0.1:5672/", "amqp://USER:PASSWORD@HOST:PORT/VHOST"),
        ("amqp://qw:secret-45@127.0.0.1:notaport/", "a valid URL"),
    ],
)
def test_a_url_that_is_not_an_amqp_url_is_a_usage_error(rabbitmq, url, expected):
    proc, took = _ensure(rabbitmq, url)
    assert proc.returncode == 2, proc.stderr
    assert "amqp url" in proc.stderr and expected in proc.stderr
    assert "secret-45" not in proc.stderr
    assert took < 15


def test_every_cli_mode_runs_on_amqp(rabbitmq, queue_name, tmp_path):
    """ensure, producer, status, consumer, redrive, purge, monitor, delete with ``-b amqp``."""
    name = queue_name("cli")

    def cli(*argv: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "workload", *argv, "-b", "amqp", "-q", name],
            env=cli_env(rabbitmq),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert proc.returncode == 0, (argv, proc.stderr[-2000:])
        return proc

    def total(queue: str = "queue") -> int:
        return json.loads(cli("status", "--json").stdout)[queue]["total"]

    cli("ensure", "--max-claims", "3")
    assert (
        json.loads(cli("producer", "--count", "6", "--progress-every", "0").stdout.splitlines()[-1])["sent"]
        == 6
    )
    wait_for(lambda: total() == 6, 10, "six queued")
    consumed = cli("consumer", "--max-messages", "2", "--python", "workload.handlers.builtin:noop")
    assert json.loads(consumed.stdout.splitlines()[-1])["done"] == 2
    rejected = cli("consumer", "--max-messages", "1", "--max-attempts", "1", "--exec", "false")
    assert json.loads(rejected.stdout.splitlines()[-1])["dead_letter"] == 1
    wait_for(lambda: total("dead_letter_queue") == 1, 10, "one dead letter")
    cli("redrive")
    wait_for(lambda: (total(), total("dead_letter_queue")) == (4, 0), 10, "the dead letter back")
    looks = cli("monitor", "--dry-run", "--iterations", "2", "-t", "0.5", "--actuator", "local")
    assert '"free"' in looks.stdout  # it read the queue's stats
    cli("purge")
    wait_for(lambda: total() == 0, 10, "purged")
    cli("delete", "--yes")
    assert name not in {q["name"] for q in rabbitmq.api("GET", "/queues/%2F").json()}


def test_a_post_to_a_missing_queue_is_an_error_not_a_silent_drop(rabbitmq, queue_name):
    from workload.queues import QueueNotFound

    q = open_queue("amqp", queue_name("missing"), **rabbitmq.queue_options)
    try:
        with pytest.raises(QueueNotFound) as err:
            q.post(["lost?"])
        assert "does not exist" in str(err.value) and "0 of 1" in str(err.value)
    finally:
        q.close()


def test_an_expired_message_is_dead_lettered_not_dropped(amqp_queue):
    q = amqp_queue(QueuePolicy(max_claims=0))
    q.post(["short-lived"], ttl=1)
    q.post(["long-lived"])
    dlq = q.dead_letter_queue()
    claim = wait_for(lambda: dlq.claim(limit=5), 15, "the expired message in the dead-letter queue")
    assert [m.body for m in claim.messages] == ["short-lived"]
    live = q.claim(limit=5)
    assert [m.body for m in live.messages] == ["long-lived"]


def test_amqps_with_the_broker_ca_works_and_an_untrusted_certificate_fails_at_once(rabbitmq, queue_name):
    from workload.queues import QueueError

    name = queue_name("tls")
    q = open_queue("amqp", name, url=rabbitmq.amqps_url, management_url=rabbitmq.management_url)
    try:
        q.ensure(QueuePolicy(max_claims=0))
        q.post([{"over": "tls"}])
        claim = q.claim(limit=1)
        assert [m.body for m in claim.messages] == [{"over": "tls"}]
        q.delete(claim.messages[0], claim)
    finally:
        q.drop()
        q.close()
    untrusted = open_queue(
        "amqp", name, url=rabbitmq.amqps_url.split("?")[0], management_url=rabbitmq.management_url
    )
    start = time.monotonic()
    try:
        with pytest.raises(QueueError) as err:
            untrusted.post(["x"])
    finally:
        untrusted.close()
    assert err.value.title == "TLS failed" and "cafile" in str(err.value)
    assert rabbitmq.workload[1] not in str(err.value)
    assert time.monotonic() - start < 10


def test_posts_go_through_the_queue_own_exchange_not_the_default_one(rabbitmq, queue_name):
    """A user with write on NAME-in only may post to NAME (least privilege: write on the default
    exchange would reach every queue); a queue ensured before it had NAME-in is still posted to."""
    name = queue_name("ex")
    q = open_queue("amqp", name, **rabbitmq.queue_options)
    q.ensure()
    try:
        url = rabbitmq.add_user(
            f"poster-{name}", "poster-pw", configure="^$", write=f"^{name}-in$", read="^$"
        )
        poster = open_queue("amqp", name, url=url, management_url=rabbitmq.management_url)
        try:
            poster.post([{"n": 1}])
        finally:
            poster.close()
        assert q.stats().free == 1
        rabbitmq.api("DELETE", f"/exchanges/%2F/{name}-in")  # as a queue ensured by an older driver
        old = open_queue("amqp", name, **rabbitmq.queue_options)
        try:
            old.post([{"n": 2}])
            assert old.stats().free == 2
        finally:
            old.close()
    finally:
        q.drop()
        q.close()


def test_the_monitor_runs_with_the_env_an_amqp_stack_writes_for_it(rabbitmq, amqp_queue):
    """The stack's monitor, started as its server starts it: the env file an amqp stack writes
    (``infra.components.monitor.monitor_env``, with ``QW_WORKER_CONCURRENCY`` from
    consumerConcurrency) plus the broker's URL, the actuator local instead of Heat. It reads the
    broker's counts look after look. (It used to exit at once with an AttributeError: the driver's
    prefetch, a consumer's concurrency + batch, was derived from the monitor's worker concurrency.)"""
    from infra.components.monitor import monitor_env
    from infra.config import load

    q = amqp_queue()
    q.post([{"seq": i} for i in range(7)])
    cfg = load(
        {
            "cloud": "c",
            "region": "R",
            "flavor": "f",
            "network": "n",
            "queueBackend": "amqp",
            "amqpBroker": "server",
            "queueName": q.name,
            "consumerConcurrency": 3,
            "scaleUpThreshold": 5,
        }
    )
    stack_env = monitor_env(cfg, "s")
    assert stack_env["QW_WORKER_CONCURRENCY"] == "3" and stack_env["QW_QUEUE_BACKEND"] == "amqp"
    env = cli_env(
        rabbitmq, **{**stack_env, "QW_ACTUATOR": "local", "QW_DRY_RUN": "true", "QW_INTERVAL": "0.5"}
    )
    proc = subprocess.run(
        [sys.executable, "-m", "workload", "monitor", "--iterations", "2"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    looks = [r for r in json_records(proc.stdout) if r.get("event") == "decision"]
    assert len(looks) == 2 and all(r["error"] is None for r in looks), looks
    assert looks[-1]["observation"]["stats"]["free"] == 7, looks[-1]
    assert looks[-1]["decision"]["desired"] == 1, looks[-1]  # 7 above the threshold 5: one more

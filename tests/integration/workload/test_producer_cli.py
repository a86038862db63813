"""The producer against a real queue, and the CLI modes end to end as a user runs them."""

from __future__ import annotations

import io
import itertools
import json

from wl_helpers import drain, run_cli

from workload.producer import Producer, widget_requests


class StepClock:
    """A clock that moves ``step`` seconds per reading: makes rate arithmetic exact."""

    def __init__(self, step: float):
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_count_is_exact_and_posts_are_batched(make_queue):
    q = make_queue()
    s = Producer(q, widget_requests(seed=1), count=25, batch=10, progress_every=0).run()
    assert (s.sent, s.batches, s.first_seq, s.last_seq, s.stopped_by) == (25, 3, 0, 24, "count")
    bodies = drain(q)
    assert sorted(b["seq"] for b in bodies) == list(range(25))
    assert all(b["producer"] == s.producer and "produced_at" in b for b in bodies)


def test_rate_schedule_ramp_and_idle(make_queue):
    """At 0.05 s per clock reading, 2 s of a schedule that idles for 1 s then runs at 40/s
    posts 40 messages."""
    q = make_queue()
    s = Producer(
        q,
        widget_requests(seed=2),
        rate=lambda t: 0 if t < 1.0 else 40,
        duration=2.0,
        batch=20,
        progress_every=0,
        clock=StepClock(0.05),
    ).run()
    assert 38 <= s.sent <= 41 and s.stopped_by == "duration"
    assert len(drain(q)) == s.sent


def test_payloads_running_out_end_the_run(make_queue):
    q = make_queue()
    s = Producer(q, ["a", {"b": 1}, "c"], progress_every=0).run()
    assert (s.sent, s.stopped_by) == (3, "payloads-exhausted")
    assert sorted(json.dumps(b.get("data", b.get("b"))) for b in drain(q)) == ['"a"', '"c"', "1"]


def test_progress_lines_while_it_runs(make_queue):
    q = make_queue()
    out = io.StringIO()
    Producer(
        q,
        itertools.repeat({"x": 1}),
        count=30,
        batch=1,
        progress_every=0.5,
        progress=out,
        clock=StepClock(0.05),
    ).run()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and all("sent" in line for line in lines)


def test_cli_producer_from_stdin_and_status_purge_delete(service, make_queue):
    q = make_queue()
    out = run_cli(
        service,
        "producer",
        "-q",
        q.name,
        "--stdin",
        "--progress-every",
        "0",
        input='{"widget_id": "w1"}\nplain line\n',
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["sent"] == 2 and summary["mode"] == "producer"

    st = run_cli(service, "status", "-q", q.name, "--json")
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["queue"]["name"] == q.name and status["queue"]["total"] == 2
    assert status["dead_letter_queue"]["total"] == 0
    human = run_cli(service, "status", "-q", q.name)
    assert q.name in human.stdout and "dead-letter" in human.stdout

    assert run_cli(service, "purge", "-q", q.name).returncode == 0
    assert drain(q) == []
    refused = run_cli(service, "delete", "-q", q.name)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    gone = run_cli(service, "delete", "-q", q.name, "--yes")
    assert gone.returncode == 0 and q.name in gone.stdout


def test_cli_producer_interval_and_consumer_exec(service, make_queue):
    q = make_queue()
    out = run_cli(
        service,
        "producer",
        "-q",
        q.name,
        "-t",
        "0.01",
        "--count",
        "5",
        "--invalid-share",
        "0",
        "--progress-every",
        "0",
    )
    assert out.returncode == 0 and json.loads(out.stdout.splitlines()[-1])["sent"] == 5
    # The seed's pairing: the consumer runs a program per message, configured by environment.
    con = run_cli(
        service, "consumer", "-q", q.name, "--idle-exit", "1", "--", "cat", QW_CONCURRENCY="2", QW_BATCH="5"
    )
    assert con.returncode == 0, con.stderr
    lines = [json.loads(x) for x in con.stdout.splitlines()]
    done = [e for e in lines if e["event"] == "message" and e["outcome"] == "done"]
    assert sorted(e["seq"] for e in done) == [0, 1, 2, 3, 4]
    assert lines[0]["event"] == "start" and lines[0]["concurrency"] == 2 and lines[0]["batch"] == 5
    assert lines[-1]["event"] == "summary" and lines[-1]["done"] == 5


def test_cli_env_config_reaches_the_queue(service, make_queue):
    q = make_queue()
    out = run_cli(service, "producer", "--count", "3", "--progress-every", "0", QW_QUEUE=q.name)
    assert out.returncode == 0, out.stderr
    assert len(drain(q)) == 3


def test_cli_status_watch_repeats_until_interrupted(zaqar, zaqar_queue):
    import signal
    import subprocess

    from wl_helpers import REPO, cli_env, workload_cmd

    q = zaqar_queue()
    q.post([{"seq": 0}])
    proc = subprocess.Popen(
        workload_cmd("status", "-q", q.name, "--watch", "-t", "0.2", "--json"),
        env=cli_env(zaqar),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    for line in (first, second):
        assert json.loads(line)["queue"]["total"] == 1


def test_cli_redrive_moves_at_most_count(service, make_queue):
    q = make_queue()
    q.dead_letter_queue().post([{"seq": i} for i in range(3)])
    out = run_cli(service, "redrive", "-q", q.name, "--count", "2")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["moved"] == 2 and result["left"] == 1
    assert len(drain(q)) == 2 and len(drain(q.dead_letter_queue())) == 1

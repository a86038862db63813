"""A real consumer process: SIGTERM gives its claims back and exits 0; SIGKILL loses nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from wl_helpers import REPO, cli_env, start_cli, workload_cmd

from devenv.procs import wait_until
from workload.consumer import Consumer, ConsumerConfig, JsonLog
from workload.handlers import make_handler
from workload.queues.base import QueuePolicy

SLOW_JOB = f"{sys.executable} -c 'import sys, time; sys.stdin.read(); time.sleep(60)'"


def log_lines(path):
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def test_sigterm_releases_claims_and_exits_zero(zaqar, zaqar_queue, tmp_path):
    q = zaqar_queue()
    q.post([{"seq": i} for i in range(5)])
    log = tmp_path / "consumer.jsonl"
    proc = start_cli(
        zaqar,
        "consumer",
        "-q",
        q.name,
        "--batch",
        "5",
        "-w",
        "2",
        "--claim-ttl",
        "600",
        "--drain-timeout",
        "1",
        "--log-file",
        str(log),
        "--exec",
        SLOW_JOB,
    )
    try:
        wait_until(lambda: q.stats().claimed == 5, 30, "the consumer to claim all 5 messages")
        time.sleep(0.5)  # two handlers are running their 60 s jobs now
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = log_lines(log)
    outcomes = [e["outcome"] for e in lines if e["event"] == "message"]
    assert sorted(outcomes) == ["released"] * 3 + ["retry"] * 2  # 3 never started, 2 killed
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["event"] == "summary" and summary["stopped_by"] == "signal"
    # Released, not left to expire: another consumer can claim all five right away (ttl was 600 s).
    c = q.claim(limit=10, ttl=60, grace=60)
    assert c is not None and sorted(m.body["seq"] for m in c.messages) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_sigkill_mid_message_loses_nothing(zaqar, zaqar_queue, tmp_path):
    n = 30
    q = zaqar_queue(QueuePolicy(claim_ttl=60, claim_grace=60, max_claims=0))
    q.post([{"seq": i, "work_s": 0.2} for i in range(n)])
    log = tmp_path / "first.jsonl"
    first = subprocess.Popen(
        workload_cmd(
            "consumer",
            "-q",
            q.name,
            "--batch",
            "5",
            "-w",
            "2",
            "--claim-ttl",
            "60",
            "--log-file",
            str(log),
            "--python",
            "workload.handlers.builtin:sleep",
        ),
        env=cli_env(zaqar),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(
            lambda: sum(e.get("outcome") == "done" for e in log_lines(log)) >= 6,
            60,
            "the first consumer to finish a few messages",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    handled = [e["seq"] for e in log_lines(log) if e.get("outcome") == "done"]

    # A second consumer picks up the rest, including what the killed one held once its claim expires.
    events: list = []
    seen = set(handled)
    second: Consumer

    def on_event(e):
        if e["event"] == "message" and e["outcome"] == "done":
            seen.add(e["seq"])
            if len(seen) == n:
                second.stop()

    second = Consumer(
        q,
        make_handler("python", "workload.handlers.builtin:sleep"),
        ConsumerConfig(batch=10, concurrency=4, claim_ttl=60, poll_max=1.0),
        log=JsonLog(None, on_event=lambda e: (events.append(e), on_event(e))),
    )
    guard = threading.Timer(150, second.stop)  # never hang the suite; the assert below tells
    guard.start()
    try:
        second.run()
    finally:
        guard.cancel()
    handled += [e["seq"] for e in events if e["event"] == "message" and e["outcome"] == "done"]
    assert set(handled) == set(range(n)), f"lost: {sorted(set(range(n)) - set(handled))}"
    duplicates = len(handled) - len(set(handled))
    print(f"SIGKILL test: {n} produced, {len(set(handled))} distinct handled, {duplicates} duplicates")

"""The monitor on a real local Zaqar with the local pool: a backlog scales the pool up, the pool
drains it, the monitor scales back to the minimum; errors hold; the CLI runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from monitor_helpers import EAGER_THRESHOLD, monitor_command, run_monitor, unreachable_queue

from workload.autoscale.local import LocalActuator
from workload.autoscale.monitor import Monitor
from workload.autoscale.policy import TargetConfig, TargetPolicy, ThresholdPolicy


def test_backlog_scales_up_drains_and_scales_back_to_minimum(work_queue, consumer_args, tmp_path):
    work_queue.post([{"work_s": 0.25, "seq": i} for i in range(80)])  # 20 s for one consumer
    pool = LocalActuator(consumer_args, tmp_path / "logs", max_size=4, stop_timeout=15)
    policy = TargetPolicy(
        TargetConfig(
            min_size=0,
            max_size=4,
            target_wait_s=4,
            boot_time_s=2,
            service_time_s=0.25,
            scale_down_window_s=2,
            idle_to_zero_s=3,
            rate_smoothing_s=2,
            max_step_down=4,
        )
    )
    records = []
    monitor = Monitor(work_queue, policy, pool, interval=0.5, log=records.append)
    sizes = []

    def done() -> bool:
        last = records[-1] if records else None
        if last and last["group"]:
            sizes.append(last["group"]["current"])
        stats = (last or {}).get("observation", {}).get("stats") or {}
        return bool(sizes) and max(sizes) >= 3 and stats.get("total") == 0 and sizes[-1] == 0

    try:
        run_monitor(monitor, done, timeout=90)
    finally:
        pool.close(timeout=10)
    actions = [r["decision"]["action"] for r in records]
    assert max(sizes) >= 3, sizes  # the backlog made it grow past one consumer
    assert work_queue.stats().total == 0  # the pool drained it
    assert sizes[-1] == 0 and "down" in actions  # and it went back to the minimum
    first_up = next(r for r in records if r["decision"]["action"] == "up")
    assert first_up["result"]["after"] > first_up["result"]["before"]
    assert "backlog" in first_up["decision"]["reason"]
    handled = sum(1 for p in pool.log_paths() for line in open(p) if '"outcome": "done"' in line)
    assert handled == 80


def test_queue_errors_hold_capacity_and_back_off(consumer_args, tmp_path):
    """A queue service that does not answer: the monitor holds the group and waits longer."""
    dead = unreachable_queue()
    pool = LocalActuator(consumer_args, tmp_path / "logs", max_size=2)
    policy = ThresholdPolicy(EAGER_THRESHOLD)
    records = []
    monitor = Monitor(dead, policy, pool, interval=0.2, max_backoff=5, log=records.append)
    try:
        pool.apply(1, "test: one consumer running")
        monitor.step()
        assert monitor.next_wait() > 0.2  # backing off
        monitor.step()
        assert monitor.next_wait() > 0.4
    finally:
        pool.close(timeout=10)
    for r in records:
        assert r["error"].startswith("queue: ")
        assert r["decision"]["desired"] == 1 and r["decision"]["action"] == "hold"
        assert r["result"] is None


def test_cli_monitor_logs_decisions_as_json(zaqar, work_queue, tmp_path):
    work_queue.post([{"seq": i} for i in range(30)])
    proc = subprocess.run(
        monitor_command(
            zaqar,
            work_queue,
            "-t",
            "0.2",
            "--iterations",
            "2",
            "--dry-run",
            "-x",
            "3",
            "-j",
            "10",
            "-n",
            "0",
            "--consumer-log-dir",
            str(tmp_path),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["event"] == "start" and lines[0]["policy"] == "threshold"
    decisions = [r for r in lines if r["event"] == "decision"]
    assert len(decisions) == 2
    assert decisions[0]["observation"]["stats"]["free"] == 30
    assert decisions[0]["decision"]["action"] == "up" and decisions[0]["result"] == {"dry_run": True}
    assert lines[-1]["event"] == "summary"


def test_cli_refuses_a_bad_policy_option_naming_it(zaqar, work_queue):
    proc = subprocess.run(
        monitor_command(zaqar, work_queue, "-j", "5", "-n", "5"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "scale_down_threshold=5" in proc.stderr and "less than scale_up_threshold" in proc.stderr


def test_cli_monitor_stops_cleanly_on_sigterm_and_stops_its_consumers(zaqar, work_queue, tmp_path):
    work_queue.post([{"work_s": 0.2, "seq": i} for i in range(20)])
    logs = tmp_path / "consumers"
    proc = subprocess.Popen(
        monitor_command(
            zaqar,
            work_queue,
            "-t",
            "0.5",
            "-x",
            "2",
            "--target-wait",
            "2",
            "--service-time",
            "0.2",
            "--boot-time",
            "1",
            "--consumer-log-dir",
            str(logs),
            "--consumer-args",
            "--python workload.handlers.builtin:sleep --batch 1 --prefetch 0",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(logs.glob("consumer-*.jsonl")):
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1]["event"] == "summary" and lines[-1]["actions"] >= 1
    # Every consumer it started logged its own summary: each was stopped, not orphaned.
    logs_written = sorted(logs.glob("consumer-*.jsonl"))
    assert logs_written
    for path in logs_written:
        assert '"event": "summary"' in path.read_text().splitlines()[-1]

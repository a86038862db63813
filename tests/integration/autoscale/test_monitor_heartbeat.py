"""The monitor's heartbeat (``$QW_HEARTBEAT_FILE``), which the image's HEALTHCHECK reads: touched
after every look that read the queue and the group and while waiting for the next one; not
touched while its looks fail. Real local Zaqar, real local pool."""

from __future__ import annotations

import os
import subprocess
import threading

from monitor_helpers import EAGER_THRESHOLD, monitor_command, start_monitor, unreachable_queue

from devenv.procs import wait_until
from workload.autoscale.local import LocalActuator
from workload.autoscale.monitor import Monitor
from workload.autoscale.policy import ThresholdPolicy
from workload.heartbeat import Heartbeat
from workload.queues import retry


def _mtime(path) -> float:
    return os.stat(path).st_mtime if os.path.exists(path) else -1.0


def test_the_monitor_beats_after_a_look_and_while_it_waits_for_the_next(work_queue, consumer_args, tmp_path):
    beat_file = tmp_path / "heartbeat"
    pool = LocalActuator(consumer_args, tmp_path / "logs", max_size=2)
    records = []
    # A long interval: everything below happens while the monitor waits for its second look.
    monitor = Monitor(
        work_queue,
        ThresholdPolicy(EAGER_THRESHOLD),
        pool,
        interval=60,
        log=records.append,
        heartbeat=Heartbeat(str(beat_file), every=0.1),
    )
    thread = start_monitor(monitor)
    try:
        wait_until(lambda: records and beat_file.exists(), timeout=30, what="the first look's heartbeat")
        assert records[0]["error"] is None
        os.utime(beat_file, (0, 0))  # as if the last beat were long ago
        wait_until(lambda: _mtime(beat_file) > 0, timeout=30, what="a beat while waiting")
        assert len(records) == 1  # that beat came from the wait, not from another look
    finally:
        monitor.stop()
        thread.join(10)
        pool.close(timeout=10)


def test_a_monitor_whose_looks_fail_stops_beating(consumer_args, tmp_path):
    beat_file = tmp_path / "heartbeat"
    beat_file.touch()
    os.utime(beat_file, (0, 0))
    dead = unreachable_queue(retry_policy=retry.NO_RETRY)
    pool = LocalActuator(consumer_args, tmp_path / "logs", max_size=2)
    records = []
    monitor = Monitor(
        dead,
        ThresholdPolicy(EAGER_THRESHOLD),
        pool,
        interval=0.1,
        max_backoff=0.3,
        log=records.append,
        heartbeat=Heartbeat(str(beat_file), every=0.05),
    )
    thread = start_monitor(monitor)
    try:
        wait_until(lambda: len(records) >= 3, timeout=60, what="three looks")
    finally:
        monitor.stop()
        thread.join(10)
        pool.close(timeout=10)
    assert all(r["error"].startswith("queue: ") for r in records)
    assert _mtime(beat_file) == 0  # no look worked: no beat, so the health check goes stale


def test_heartbeat_sleep_beats_through_a_long_wait(tmp_path):
    """What the Heat actuator sleeps with while it polls an update: beats all along the wait."""
    beat_file = tmp_path / "heartbeat"
    heartbeat = Heartbeat(str(beat_file), every=0.05)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (heartbeat.sleep(3), done.set()), daemon=True)
    thread.start()
    wait_until(beat_file.exists, timeout=10, what="the first beat")
    os.utime(beat_file, (0, 0))
    wait_until(lambda: _mtime(beat_file) > 0, timeout=10, what="a beat later in the sleep")
    assert not done.is_set()  # still sleeping: the beat came from inside the wait
    thread.join(10)
    assert done.is_set()


def test_cli_monitor_writes_the_heartbeat_file(zaqar, work_queue, tmp_path):
    beat_file = tmp_path / "heartbeat"
    proc = subprocess.run(
        monitor_command(
            zaqar,
            work_queue,
            "-t",
            "0.2",
            "--iterations",
            "2",
            "--dry-run",
            "--consumer-log-dir",
            str(tmp_path),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "QW_HEARTBEAT_FILE": str(beat_file)},
    )
    assert proc.returncode == 0, proc.stderr
    assert beat_file.is_file(), "the monitor CLI did not write $QW_HEARTBEAT_FILE"

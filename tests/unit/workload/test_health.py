"""The container health check's decision (workload/health.py), on real files."""

from __future__ import annotations

import os

from workload.health import check


def test_long_running_roles_are_healthy_only_with_a_fresh_heartbeat(tmp_path):
    beat = tmp_path / "heartbeat"
    argv = ["python3", "-m", "workload", "monitor", "--dry-run"]
    healthy, why = check(argv, str(beat), max_age=120, now=1000.0)
    assert not healthy and "no heartbeat" in why and "monitor" in why
    beat.touch()
    os.utime(beat, (990, 990))
    assert check(argv, str(beat), max_age=120, now=1000.0) == (True, "monitor: heartbeat 10 s old")
    healthy, why = check(["python3", "-m", "workload", "consumer"], str(beat), max_age=5, now=1000.0)
    assert not healthy and why == "consumer: heartbeat 10 s old (limit QW_HEARTBEAT_MAX_AGE=5)"


def test_one_shot_roles_and_no_heartbeat_file_fall_back_to_the_process_state(tmp_path):
    assert check(["python3", "-m", "workload", "producer"], str(tmp_path / "none"), 120, 0.0) == (
        True,
        "running",
    )
    assert check(["python3", "-m", "workload", "consumer"], None, 120, 0.0)[0]
    assert check(["python3", "-m", "workload", "consumer"], None, 120, 0.0, process_state="Z") == (
        False,
        "process state Z",
    )

"""A short ``python -m devenv demo``: it scales up and down and loses nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("backend", ["zaqar", "amqp"])
def test_short_demo_scales_both_ways_and_loses_nothing(tmp_path, backend):
    """``make demo`` and ``DEMO_BACKEND=amqp make demo``, shortened."""
    env = {
        **os.environ,
        "DEMO_SECONDS": "40",
        "QW_DEMO_OUT": str(tmp_path / "demo-out"),
        "DEMO_BACKEND": backend,
    }
    # What `make demo` runs; options after `--` reach the demo itself.
    proc = subprocess.run(
        [sys.executable, "-m", "devenv", "demo", "--", "--max-workers", "4"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    summary = json.loads(lines[-1])
    assert proc.returncode == 0, (summary, proc.stderr[-2000:])
    assert summary["backend"] == backend and summary["produced"] > 0
    assert summary["lost"] == 0 and summary["consumed"] == summary["produced"]
    assert summary["scale_ups"] >= 1 and summary["scale_downs"] >= 1
    assert summary["max_workers"] >= 2
    assert summary["p95_wait_s"] is not None
    assert summary["scale_events"] == summary["scale_ups"] + summary["scale_downs"]
    assert (tmp_path / "demo-out" / "decisions.jsonl").stat().st_size > 0


def test_demo_refuses_a_length_beyond_two_minutes():
    env = {**os.environ, "DEMO_SECONDS": "600"}
    proc = subprocess.run(
        [sys.executable, "-m", "devenv", "demo"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 2 and "600 s is not allowed: from 15 to 120 s" in proc.stderr


def test_demo_refuses_an_unknown_backend():
    env = {**os.environ, "DEMO_BACKEND": "kafka"}
    proc = subprocess.run(
        [sys.executable, "-m", "devenv", "demo"], capture_output=True, text=True, timeout=60, env=env
    )
    assert (
        proc.returncode == 2 and "DEMO_BACKEND='kafka' is not allowed: one of zaqar, amqp, sqs" in proc.stderr
    )

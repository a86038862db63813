"""Helpers shared by the workload's integration tests (imported as ``wl_helpers``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def cli_env(service, **extra: str) -> dict[str, str]:
    """Environment for a ``python -m workload`` child pointed at ``service``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QW_", "OS_"))}
    env.update(service.env())
    env.update(extra)
    return env


def workload_cmd(*argv: str) -> list[str]:
    return [sys.executable, "-m", "workload", *argv]


def run_cli(service, *argv: str, input: str | None = None, **extra_env: str):
    return subprocess.run(
        workload_cmd(*argv),
        capture_output=True,
        text=True,
        input=input,
        env=cli_env(service, **extra_env),
        cwd=REPO,
        timeout=120,
    )


def start_cli(service, *argv: str, **extra_env: str) -> subprocess.Popen:
    """A ``python -m workload`` child running in the background, its stdout and stderr piped (text)."""
    return subprocess.Popen(
        workload_cmd(*argv),
        env=cli_env(service, **extra_env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def drain(q, limit: int = 10):
    """Claim and delete everything free in ``q``; return the bodies."""
    bodies = []
    while True:
        c = q.claim(limit=limit, ttl=60, grace=60)
        if c is None or not c.messages:
            return bodies
        for m in c.messages:
            bodies.append(m.body)
            q.delete(m, c)

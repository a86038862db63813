"""The container's health check: the image's HEALTHCHECK runs ``python3 -m workload.health``.

* One-shot roles (producer, status, redrive...): healthy while they run.
* The long-running roles (consumer, monitor) with ``$QW_HEARTBEAT_FILE`` set: healthy while that
  file was touched within ``$QW_HEARTBEAT_MAX_AGE`` seconds (default 120). A missing file is
  unhealthy: both touch it as soon as they work (the consumer's first claim, the monitor's first
  look that read the queue and the group), and the HEALTHCHECK's start period covers their start.
  So a consumer or monitor that never reaches its queue shows as unhealthy, not as healthy.
* Without ``$QW_HEARTBEAT_FILE``: healthy while the process is not a zombie.

Prints one line saying why; exits 0 (healthy) or 1 (unhealthy), as HEALTHCHECK expects.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from workload.heartbeat import ENV as HEARTBEAT_ENV

MAX_AGE_ENV = "QW_HEARTBEAT_MAX_AGE"
DEFAULT_MAX_AGE = 120.0
LONG_RUNNING = ("consumer", "monitor")


def check(
    argv: list[str], heartbeat: str | None, max_age: float, now: float, process_state: str = "R"
) -> tuple[bool, str]:
    """Whether the process running ``argv`` is healthy, and why. Pure but for the file's mtime."""
    role = next((a for a in argv if a in LONG_RUNNING), None)
    if role and heartbeat:
        try:
            age = now - os.stat(heartbeat).st_mtime
        except FileNotFoundError:
            return False, f"{role}: no heartbeat at {heartbeat} yet (it has not reached its queue)"
        if age >= max_age:
            return False, f"{role}: heartbeat {age:.0f} s old (limit {MAX_AGE_ENV}={max_age:g})"
        return True, f"{role}: heartbeat {age:.0f} s old"
    if process_state in ("Z", "X"):
        return False, f"process state {process_state}"
    return True, "running"


def _pid1() -> tuple[list[str], str]:
    argv = [a.decode() for a in Path("/proc/1/cmdline").read_bytes().split(b"\0") if a]
    state = Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()[0]
    return argv, state


def main() -> int:
    argv, state = _pid1()
    try:
        max_age = float(os.environ.get(MAX_AGE_ENV) or DEFAULT_MAX_AGE)
    except ValueError:
        print(f"{MAX_AGE_ENV}={os.environ[MAX_AGE_ENV]!r}: a number of seconds", file=sys.stderr)
        return 1
    healthy, why = check(argv, os.environ.get(HEARTBEAT_ENV) or None, max_age, time.time(), state)
    print(("healthy: " if healthy else "unhealthy: ") + why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())

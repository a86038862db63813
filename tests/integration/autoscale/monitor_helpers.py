"""Helpers shared by the monitor's integration tests on the local Zaqar (imported as
``monitor_helpers``): the monitor's command line, a policy that acts on every look, a queue
service that does not answer, and a monitor run in a thread."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from devenv.procs import free_port
from workload.autoscale.monitor import Monitor
from workload.autoscale.policy import ThresholdConfig
from workload.queues import open_queue
from workload.queues.base import QueueDriver

#: The seed's rule with no cooldowns: one step up above 10 free messages, down at 0, on 0..2.
EAGER_THRESHOLD = ThresholdConfig(
    min_size=0, max_size=2, scale_up_threshold=10, scale_down_threshold=0, up_cooldown_s=0, down_cooldown_s=0
)


def monitor_command(zaqar, queue: QueueDriver, *args: str) -> list[str]:
    """``python -m workload monitor`` on ``queue`` of the local Zaqar, then ``args``."""
    return [
        sys.executable,
        "-m",
        "workload",
        "monitor",
        "--queue",
        queue.name,
        "--zaqar-url",
        zaqar.url,
        "--project",
        zaqar.project,
        *args,
    ]


def unreachable_queue(**options) -> QueueDriver:
    """A Zaqar queue on a loopback port where nothing listens: every call fails."""
    return open_queue("zaqar", "nowhere", url=f"http://127.0.0.1:{free_port()}", project="p", **options)


def start_monitor(monitor: Monitor) -> threading.Thread:
    """``monitor.run()`` in a daemon thread (stop it with ``monitor.stop()``)."""
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    return thread


def run_monitor(monitor: Monitor, until: Callable[[], bool], timeout: float) -> None:
    """Run ``monitor`` until ``until()`` is true or ``timeout`` seconds passed, then stop it."""
    thread = start_monitor(monitor)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until():
            time.sleep(0.2)
    finally:
        monitor.stop()
        thread.join(10)

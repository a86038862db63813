"""A liveness file for container health checks.

The consumer's claim loop touches ``$QW_HEARTBEAT_FILE`` as it goes (at most every few seconds,
idle or busy); the image's HEALTHCHECK calls the container unhealthy when the file is older than
``$QW_HEARTBEAT_MAX_AGE``. A loop that is stuck (a deadlock, a queue it cannot reach through all
its retries) stops touching it, which a process check alone would never show. The monitor keeps
no heartbeat: a Heat update it waits for can rightly take longer than that age.
"""
from __future__ import annotations

import math
import os
import time

ENV = "QW_HEARTBEAT_FILE"


class Heartbeat:
    """Touches ``path`` (default ``$QW_HEARTBEAT_FILE``; nothing when unset) at most every ``every`` s."""

    def __init__(self, path: str | None = None, every: float = 5.0):
        self.path = path if path is not None else os.environ.get(ENV) or None
        self.every = every
        self._last = -math.inf

    def beat(self) -> None:
        if not self.path:
            return
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        try:
            with open(self.path, "a"):
                os.utime(self.path)
        except OSError:  # a health file we cannot write must never stop the work itself
            pass

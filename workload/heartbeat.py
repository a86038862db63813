"""A liveness file for container health checks.

The consumer's claim loop touches ``$QW_HEARTBEAT_FILE`` as it goes (at most every few seconds,
idle or busy) once the queue has answered a claim, and stops while its claims fail; the image's
HEALTHCHECK (workload/health.py) calls the container unhealthy when the file is missing or older
than ``$QW_HEARTBEAT_MAX_AGE``. A loop that is stuck (a deadlock, a hung request) or a queue it
cannot reach stops the beat, which a process check alone would never show.

The monitor touches it after every look that read the queue and the group, while it waits for the
next look after such a look, and while it polls a Heat update or resize it is waiting for
(:meth:`Heartbeat.sleep` is the Heat actuator's sleep): a long stack update is progress, a hung
request or looks that keep failing are not.
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

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, beating at least every ``every`` seconds: the sleep of a loop that
        polls for progress (the Heat actuator's waits)."""
        end = time.monotonic() + seconds
        while True:
            self.beat()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, self.every))

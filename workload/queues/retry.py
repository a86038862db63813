"""Retries with exponential backoff and full jitter, for operations that are safe to repeat.

Which operations are safe is the caller's decision (each driver says it per call); this module
only knows how long to wait and how often.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class Retryable(Exception):
    """Raised by an attempt that failed in a way worth another try (connection error, 5xx).

    ``final`` is the exception to raise when no attempt is left.
    """

    def __init__(self, final: Exception):
        super().__init__(str(final))
        self.final = final


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in all (1 = no retry); waits grow ``base * 2**n`` up to ``cap`` seconds, and
    each wait is drawn uniformly below that bound (full jitter) so clients do not retry in step."""

    # 8 attempts wait about 7 s in all on average: longer than the local Zaqar's gc interval, so
    # a stats 503 after an expiry is normally outlived; a dead endpoint is reported within ~15 s.
    attempts: int = 8
    base: float = 0.2
    cap: float = 4.0

    def delay(self, retry_number: int, rng: Callable[[], float] = random.random) -> float:
        return rng() * min(self.cap, self.base * (2**retry_number))


NO_RETRY = RetryPolicy(attempts=1)


def call(
    attempt: Callable[[], T],
    policy: RetryPolicy,
    safe: bool,
    what: str = "request",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``attempt``; on :class:`Retryable` try again while ``safe`` and attempts remain."""
    tries = policy.attempts if safe else 1
    for n in range(tries):
        try:
            return attempt()
        except Retryable as exc:
            if n + 1 >= tries:
                raise exc.final from None
            wait = policy.delay(n)
            log.debug("%s failed (%s); retry %d/%d in %.2f s", what, exc, n + 1, tries - 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")

"""Fixtures for the autoscale integration tests: fresh queues on the real local Zaqar, and a
command line for consumers of them."""

from __future__ import annotations

import uuid

import pytest

from workload.queues import open_queue
from workload.queues.base import QueuePolicy


@pytest.fixture
def work_queue(zaqar):
    """A fresh queue on the local Zaqar (dropped afterwards)."""
    q = open_queue("zaqar", f"as-{uuid.uuid4().hex[:10]}", **zaqar.queue_options)
    q.ensure(QueuePolicy(claim_ttl=60, claim_grace=60, max_claims=0))
    yield q
    try:
        q.drop()
    except Exception:  # a failed cleanup must not hide the test's own result
        pass


@pytest.fixture
def consumer_args(zaqar, work_queue):
    """Arguments for ``python -m workload consumer``: the sleep handler, one message at a time,
    nothing claimed ahead (so waiting messages stay visible as free)."""
    return [
        "--queue",
        work_queue.name,
        "--backend",
        "zaqar",
        "--zaqar-url",
        zaqar.url,
        "--project",
        zaqar.project,
        "--python",
        "workload.handlers.builtin:sleep",
        "--batch",
        "1",
        "--prefetch",
        "0",
        "--drain-timeout",
        "1",
        "--retry-delay",
        "0.5",
    ]

"""Helpers for the workload's integration tests: fresh queues on the real local services."""
from __future__ import annotations

import uuid

import pytest

from workload.queues import open_queue
from workload.queues.base import QueuePolicy

@pytest.fixture(params=["zaqar", "sqs"])
def backend(request):
    """Run a test on both drivers (for behaviour that does not depend on the service)."""
    return request.param


@pytest.fixture
def service(request, backend):
    return request.getfixturevalue(backend)


@pytest.fixture
def new_queue(service, backend):
    """Factory: a queue (and its dead-letter queue) with a unique name, created with ``policy``.

    The consumer dead-letters by itself unless the policy says otherwise (max_claims=0)."""
    made = []

    def make(policy: QueuePolicy | None = None, prefix: str = "wl"):
        q = open_queue(backend, f"{prefix}-{uuid.uuid4().hex[:10]}", **service.queue_options)
        q.ensure(policy or QueuePolicy(claim_ttl=60, claim_grace=60, max_claims=0))
        made.append(q)
        return q

    yield make
    for q in made:
        try:
            q.drop()
        except Exception:  # a failed cleanup must not hide the test's own result
            pass


@pytest.fixture
def zaqar_queue(zaqar):
    """Factory for Zaqar-only tests (real claim TTLs, the service's own dead-lettering)."""
    made = []

    def make(policy: QueuePolicy | None = None, prefix: str = "wz"):
        q = open_queue("zaqar", f"{prefix}-{uuid.uuid4().hex[:10]}", **zaqar.queue_options)
        q.ensure(policy or QueuePolicy(claim_ttl=60, claim_grace=60, max_claims=0))
        made.append(q)
        return q

    yield make
    for q in made:
        try:
            q.drop()
        except Exception:
            pass

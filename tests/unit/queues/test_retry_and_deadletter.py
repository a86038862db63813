"""Backoff arithmetic, which calls are repeated, and the dead-letter envelope."""

from __future__ import annotations

import pytest

from workload.queues import QueueError, retry
from workload.queues.deadletter import unwrap, wrap


def test_waits_grow_exponentially_up_to_the_cap_with_full_jitter():
    p = retry.RetryPolicy(attempts=8, base=0.5, cap=3.0)
    assert [p.delay(n, rng=lambda: 1.0) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.delay(3, rng=lambda: 0.0) == 0.0


def _flaky(failures):
    calls = []

    def attempt():
        calls.append(1)
        if len(calls) <= failures:
            raise retry.Retryable(QueueError("Service Unavailable", "try later", 503))
        return "ok"

    return attempt, calls


def test_a_safe_call_is_repeated_until_it_succeeds():
    attempt, calls = _flaky(2)
    waits = []
    assert retry.call(attempt, retry.RetryPolicy(attempts=3), safe=True, sleep=waits.append) == "ok"
    assert len(calls) == 3 and len(waits) == 2


def test_an_unsafe_call_is_tried_once_and_the_service_error_surfaces():
    attempt, calls = _flaky(1)
    with pytest.raises(QueueError) as err:
        retry.call(attempt, retry.RetryPolicy(attempts=5), safe=False, sleep=lambda s: None)
    assert len(calls) == 1 and err.value.status == 503 and err.value.description == "try later"


def test_retries_run_out_with_the_last_error():
    attempt, calls = _flaky(10)
    with pytest.raises(QueueError):
        retry.call(attempt, retry.RetryPolicy(attempts=4), safe=True, sleep=lambda s: None)
    assert len(calls) == 4


def test_dead_letter_envelope_round_trips_and_plain_bodies_pass_through():
    body = {"widget": 7}
    wrapped = wrap(body, queue="jobs", message_id="m1", reason="exit 3", claim_count=5)
    assert unwrap(wrapped) == (
        body,
        {"queue": "jobs", "original_id": "m1", "reason": "exit 3", "claim_count": 5},
    )
    assert unwrap(body) == (body, None)
    assert unwrap({"dead_letter": "x", "body": 1}) == ({"dead_letter": "x", "body": 1}, None)

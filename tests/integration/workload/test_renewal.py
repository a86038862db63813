"""Claim renewal keeps a job that outlives its claim from being handed to another consumer."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from workload.consumer import Consumer, ConsumerConfig, JsonLog
from workload.handlers import make_handler
from workload.queues import open_queue
from workload.queues.base import QueuePolicy


def run_long_job_while_another_consumer_polls(q, work_s: float, claim_ttl: int):
    """Run one job of ``work_s`` seconds under claims of ``claim_ttl`` seconds while a second
    client keeps claiming; return (what the second client got, the worker's events)."""
    q.post([{"seq": 0, "work_s": work_s}])
    events: list = []
    worker = Consumer(
        q,
        make_handler("python", "workload.handlers.builtin:sleep"),
        ConsumerConfig(batch=1, claim_ttl=claim_ttl, max_messages=1),
        log=JsonLog(None, on_event=events.append),
        consumer_id="long",
    )
    t = threading.Thread(target=worker.run)
    t.start()
    while not worker.counters["claimed"] and t.is_alive():  # the long job's consumer claims first
        time.sleep(0.05)
    stolen = []
    while t.is_alive():
        c = q.claim(limit=1, ttl=claim_ttl)
        if c is not None and c.messages:
            stolen.extend(m.body["seq"] for m in c.messages)
            q.release(c)
        t.join(0.5)
    return stolen, events


def test_renewal_on_sqs_outlives_a_short_visibility_timeout(sqs):
    q = open_queue("sqs", f"wr-{uuid.uuid4().hex[:10]}", **sqs.queue_options)
    q.ensure(QueuePolicy(max_claims=0))
    try:
        stolen, events = run_long_job_while_another_consumer_polls(q, work_s=8, claim_ttl=3)
    finally:
        q.drop()
    assert stolen == [], events
    assert [e["outcome"] for e in events if e["event"] == "message"] == ["done"]
    assert sum(e["event"] == "renew" for e in events) >= 2


@pytest.mark.slow
def test_renewal_on_zaqar_outlives_the_minimum_claim(zaqar_queue):
    q = zaqar_queue()
    # Longer than the 60 s claim (Zaqar's minimum); renewed 20 s before it would expire.
    stolen, events = run_long_job_while_another_consumer_polls(q, work_s=66, claim_ttl=60)
    assert stolen == [], events
    assert [e["outcome"] for e in events if e["event"] == "message"] == ["done"]
    assert sum(e["event"] == "renew" for e in events) >= 1

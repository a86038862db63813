"""Claim renewal keeps a job that outlives its claim from being handed to another consumer."""
from __future__ import annotations

import threading
import time

import pytest

from workload.consumer import Consumer, ConsumerConfig, JsonLog
from workload.handlers import make_handler


@pytest.mark.slow
def test_renewal_keeps_a_long_job_from_redelivery(zaqar_queue):
    q = zaqar_queue()
    q.post([{"seq": 0, "work_s": 75}])  # longer than the 60 s claim (Zaqar's minimum)
    events: list = []
    worker = Consumer(q, make_handler("python", "workload.handlers.builtin:sleep"),
                      ConsumerConfig(batch=1, claim_ttl=60, claim_grace=60, max_messages=1),
                      log=JsonLog(None, on_event=events.append), consumer_id="long")
    t = threading.Thread(target=worker.run)
    start = time.monotonic()
    t.start()
    while not worker.counters["claimed"] and t.is_alive():  # the long job's consumer claims first
        time.sleep(0.05)
    # Meanwhile another consumer keeps asking for work: it must never get the message.
    stolen = []
    while t.is_alive():
        c = q.claim(limit=1, ttl=60, grace=60)
        if c is not None and c.messages:
            stolen.extend((round(time.monotonic() - start), m.body["seq"]) for m in c.messages)
            q.release(c)
        t.join(2)
    assert stolen == [], events
    assert [e["outcome"] for e in events if e["event"] == "message"] == ["done"]
    assert sum(e["event"] == "renew" for e in events) >= 1

"""The consumer against real queues: every message handled once, retries, dead letters, replies."""

from __future__ import annotations

import time

from wl_helpers import drain

from workload.admin import queue_status, redrive
from workload.consumer import Consumer, ConsumerConfig, JsonLog
from workload.handlers import make_handler
from workload.producer import Producer, widget_requests

GOOD = "31f37378-54f4-11e5-ad75-3c970e65f731"


def consume(q, handler: str, events: list, reply_queue=None, **cfg):
    cfg.setdefault("idle_exit", 1.0)
    cfg.setdefault("poll_max", 0.2)
    c = Consumer(
        q,
        make_handler("python", handler),
        ConsumerConfig(**cfg),
        reply_queue=reply_queue,
        log=JsonLog(None, on_event=events.append),
        consumer_id="test",
    )
    return c.run()


def messages(events):
    return [e for e in events if e["event"] == "message"]


def test_every_message_is_handled_once_and_deleted(make_queue):
    q = make_queue()
    Producer(q, widget_requests(seed=3), count=45, batch=20, progress_every=0).run()
    events: list = []
    summary = consume(q, "workload.handlers.builtin:noop", events, batch=10, concurrency=3)
    done = [e for e in messages(events) if e["outcome"] == "done"]
    assert sorted(e["seq"] for e in done) == list(range(45))
    assert summary["done"] == 45 and summary["retry"] == 0 and summary["stopped_by"] == "idle"
    for e in done:
        assert e["message_id"] and e["claim_id"] and e["duration_s"] >= 0 and e["wait_s"] >= 0
    assert events[-1]["event"] == "summary"
    assert drain(q) == []  # nothing left to claim: all were deleted


def test_poison_message_is_retried_dead_lettered_and_redriven_without_blocking(make_queue):
    q = make_queue()
    q.post(
        [{"widget_id": "this_is_not_a_valid_widget_id", "seq": 0}]
        + [{"widget_id": GOOD, "seq": i} for i in range(1, 6)]
    )
    events: list = []
    # batch=1: Zaqar 23's redis claim script, once it meets a released message, also takes the
    # messages behind it that other claims still hold, so batches > 1 after a retry can hand a
    # message out twice (at-least-once: never lost, but this test counts exact handlings).
    summary = consume(
        q, "workload.handlers.builtin:flaky_widget", events, batch=1, max_attempts=3, retry_delay=0.0
    )
    poison = [e for e in messages(events) if e["seq"] == 0]
    assert [e["outcome"] for e in poison] == ["retry", "retry", "dead-letter"]
    assert [e["attempt"] for e in poison] == [1, 2, 3]
    assert sorted(e["seq"] for e in messages(events) if e["outcome"] == "done") == [1, 2, 3, 4, 5]
    assert summary["dead_letter"] == 1
    dlq_status = queue_status(q)["dead_letter_queue"]
    assert dlq_status["total"] == 1
    result = redrive(q)
    assert result["moved"] == 1
    back = drain(q)
    assert len(back) == 1 and back[0]["widget_id"] == "this_is_not_a_valid_widget_id"
    assert drain(q.dead_letter_queue()) == []


def test_rejected_message_is_dead_lettered_at_once(make_queue):
    q = make_queue()
    q.post([{"widget_id": "nope", "seq": 0}, {"widget_id": GOOD, "seq": 1}])
    events: list = []
    consume(q, "workload.handlers.builtin:widget", events)
    outcomes = {e["seq"]: e["outcome"] for e in messages(events)}
    assert outcomes == {0: "dead-letter", 1: "done"}
    assert "invalid widget id" in next(e["error"] for e in messages(events) if e["seq"] == 0)


def test_replies_go_to_the_reply_queue(make_queue):
    q, replies = make_queue(), make_queue(prefix="wr")
    ids = q.post([{"widget_id": GOOD, "seq": i} for i in range(4)])
    events: list = []
    summary = consume(q, "workload.handlers.builtin:widget", events, reply_queue=replies)
    assert summary["replies"] == 4
    got = drain(replies)
    assert sorted(r["request_id"] for r in got) == sorted(ids)
    assert all(r["reply"] == {"widget_id": GOOD, "status": "created", "seq": r["seq"]} for r in got)


def test_service_dead_letters_by_max_claims(zaqar_queue):
    """With a max-claims policy Zaqar itself moves the poison message; the consumer only retries."""
    from workload.queues.base import QueuePolicy

    q = zaqar_queue(QueuePolicy(claim_ttl=60, claim_grace=60, max_claims=2))
    q.post([{"widget_id": "bad", "seq": 0}, {"widget_id": GOOD, "seq": 1}])
    events: list = []
    summary = consume(q, "workload.handlers.builtin:flaky_widget", events, batch=1, retry_delay=0.0)
    poison = [e["outcome"] for e in messages(events) if e["seq"] == 0]
    assert poison == ["retry", "retry"] and summary["dead_letter"] == 0  # the service moved it
    assert [e["outcome"] for e in messages(events) if e["seq"] == 1] == ["done"]
    assert drain(q) == []
    # Zaqar keeps the moved message tied to the claim that moved it until that claim expires,
    # so here it shows in the dead-letter queue's stats but cannot be claimed (or redriven) yet.
    assert queue_status(q)["dead_letter_queue"]["total"] == 1


def test_the_consumer_touches_its_heartbeat_file_while_it_runs(make_queue, tmp_path, monkeypatch):
    """The image's health check reads this file: a live claim loop keeps it fresh."""
    beat = tmp_path / "heartbeat"
    monkeypatch.setenv("QW_HEARTBEAT_FILE", str(beat))
    q = make_queue()
    q.post([{"seq": 0}])
    consume(q, "workload.handlers.builtin:noop", [], idle_exit=1.0)
    assert beat.exists()
    # The loop beats whether or not there is work: after an idle second the file is still fresh.
    assert time.time() - beat.stat().st_mtime < 5


def test_a_consumer_that_cannot_reach_its_queue_never_touches_its_heartbeat(tmp_path, monkeypatch):
    """The health check then calls it unhealthy instead of healthy (workload/health.py)."""
    import threading

    from devenv.procs import free_port, wait_until
    from workload.queues import open_queue, retry

    beat = tmp_path / "heartbeat"
    monkeypatch.setenv("QW_HEARTBEAT_FILE", str(beat))
    dead = open_queue(
        "zaqar", "nowhere", url=f"http://127.0.0.1:{free_port()}", project="p", retry_policy=retry.NO_RETRY
    )
    events: list = []
    consumer = Consumer(
        dead,
        make_handler("python", "workload.handlers.builtin:noop"),
        ConsumerConfig(poll_min=0.05, poll_max=0.1),
        log=JsonLog(None, on_event=events.append),
        consumer_id="test",
    )
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: sum(e.get("event") == "error" for e in events) >= 2, timeout=60, what="two failed claims"
        )
    finally:
        consumer.stop()
        thread.join(30)
    assert not beat.exists()

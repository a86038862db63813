"""The consumer's watch on its server's metadata (workload/drain_request.py), fed a sequence of
meta_data.json documents: a drain asked, called off, asked again; an unreachable metadata API
calls nothing off."""

from __future__ import annotations

from workload.drain_request import DrainWatch, drain_deadline


def watch_over(documents):
    events = []
    docs = iter(documents)

    def fetch(url):
        doc = next(docs)
        if isinstance(doc, Exception):
            raise doc
        return doc

    w = DrainWatch(
        lambda deadline: events.append(("drain", deadline)),
        fetch=fetch,
        on_cancel=lambda: events.append(("called-off",)),
        on_error=lambda error: events.append(("error", error)),
    )
    return w, events


def meta(**kv):
    return {"uuid": "u-1", "meta": kv}


def test_a_drain_is_seen_once_called_off_once_and_asked_again():
    w, events = watch_over(
        [meta(), meta(qw_drain="100"), meta(qw_drain="100"), meta(), meta(), meta(qw_drain="200")]
    )
    deadlines = [w.check() for _ in range(6)]
    assert deadlines == [None, 100.0, 100.0, None, None, 200.0]
    assert events == [("drain", 100.0), ("called-off",), ("drain", 200.0)]
    assert (w.deadline, w.asked) == (200.0, 200.0)


def test_an_unreachable_metadata_api_calls_no_drain_off():
    w, events = watch_over(
        [meta(qw_drain="100"), OSError("timed out"), OSError("timed out"), meta(qw_drain="100")]
    )
    for _ in range(4):
        w.check()
    assert events == [
        ("drain", 100.0),
        ("error", "metadata API http://169.254.169.254/openstack/latest/meta_data.json: timed out"),
    ]
    assert w.errors == 2 and w.deadline == 100.0


def test_the_asked_deadline_outlives_the_call_off():
    w, _ = watch_over([meta(qw_drain="100"), meta()])
    w.check(), w.check()
    assert w.deadline is None and w.asked == 100.0


def test_a_value_that_is_not_a_number_still_asks_for_a_drain_now():
    assert drain_deadline(meta(qw_drain="soon")) == 0.0
    assert drain_deadline(meta(other="1")) is None
    assert drain_deadline({}) is None

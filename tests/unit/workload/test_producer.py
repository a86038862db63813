"""Payload sources and stamping of the producer (no queue needed)."""

from __future__ import annotations

import io
import itertools
import uuid

import pytest

from workload import producer as prod


def test_widget_requests_share_of_invalid_ids():
    reqs = list(itertools.islice(prod.widget_requests(invalid_share=0.25, seed=1), 2000))

    def valid(r):
        try:
            uuid.UUID(r["widget_id"])
            return True
        except ValueError:
            return False

    invalid = sum(not valid(r) for r in reqs)
    assert 400 < invalid < 600  # 25 % of 2000, give or take
    assert all(r["action"] == "create" for r in reqs)


def test_widget_requests_all_valid_by_default_and_carry_work():
    reqs = list(itertools.islice(prod.widget_requests(work_s=0.5, seed=2), 100))
    assert all(uuid.UUID(r["widget_id"]) and r["work_s"] == 0.5 for r in reqs)
    assert len({r["widget_id"] for r in reqs}) == 100


def test_invalid_share_out_of_range_is_refused():
    with pytest.raises(ValueError, match="invalid_share=1.5"):
        next(prod.widget_requests(invalid_share=1.5))


def test_lines_are_json_or_text_and_blank_lines_skipped():
    src = io.StringIO('{"widget_id": "a"}\nplain text line\n\n[1, 2]\n"quoted"\n')
    assert list(prod.lines_from(src)) == [{"widget_id": "a"}, "plain text line", [1, 2], "quoted"]


def test_file_payloads(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"n": 1}\n{"n": 2}\n')
    assert list(prod.file_payloads(str(f))) == [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize("bad", [-1, float("nan"), "fast", True])
def test_bad_rates_are_refused(bad):
    with pytest.raises(ValueError, match="rate="):
        prod.constant_rate(bad)


def test_rates_become_schedules():
    assert prod.constant_rate(None) is None
    assert prod.constant_rate(5)(123.0) == 5.0
    ramp = lambda t: t  # noqa: E731
    assert prod.constant_rate(ramp) is ramp


class _NoQueue:
    name = "unused"


def test_stamp_adds_seq_produced_at_and_producer_and_wraps_non_dicts():
    p = prod.Producer(_NoQueue(), [], producer_id="abc", start_seq=10)
    a = p.stamp({"widget_id": "w"})
    b = p.stamp("text")
    assert (a["seq"], a["producer"], a["widget_id"]) == (10, "abc", "w")
    assert b == {"data": "text", "seq": 11, "produced_at": b["produced_at"], "producer": "abc"}
    assert isinstance(a["produced_at"], float)


@pytest.mark.parametrize(
    "kw, words", [({"batch": 21}, "batch=21"), ({"count": -1}, "count=-1"), ({"duration": -2}, "duration=-2")]
)
def test_bad_producer_arguments(kw, words):
    with pytest.raises(ValueError, match=words):
        prod.Producer(_NoQueue(), [], **kw)

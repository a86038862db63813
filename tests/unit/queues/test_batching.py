"""Splitting posts into the batches a service accepts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workload.queues import InvalidInput
from workload.queues.batching import split_batches


def test_count_limit_splits_in_order():
    assert split_batches([1] * 25, max_count=10, max_bytes=10**6) == [range(10), range(10, 20), range(20, 25)]


def test_bytes_limit_counts_envelope_and_separators():
    # envelope 15 + 100 + 1 + 100 = 216 fits in 216; a third item does not.
    assert split_batches([100, 100, 100], 20, 216, envelope=15, separator=1) == [range(2), range(2, 3)]
    assert split_batches([100, 100], 20, 215, envelope=15, separator=1) == [range(1), range(1, 2)]


def test_an_item_too_big_alone_is_named():
    with pytest.raises(InvalidInput) as err:
        split_batches([10, 300, 10], 20, 300, envelope=15)
    assert err.value.name == "bodies[1] size" and "at most 285 bytes" in str(err.value)


def test_nothing_to_post_is_no_batch():
    assert split_batches([], 10, 100) == []


@given(st.lists(st.integers(1, 500), max_size=60), st.integers(1, 12), st.integers(0, 30), st.integers(0, 2))
def test_batches_cover_every_item_once_in_order_within_limits(sizes, max_count, envelope, sep):
    max_bytes = 500 + envelope
    batches = split_batches(sizes, max_count, max_bytes, envelope=envelope, separator=sep)
    assert [i for b in batches for i in b] == list(range(len(sizes)))
    for b in batches:
        assert 1 <= len(b) <= max_count
        assert envelope + sum(sizes[i] for i in b) + sep * (len(b) - 1) <= max_bytes
    # maximal: the next item would not have fitted in the batch before it
    for prev, nxt in zip(batches, batches[1:]):
        used = envelope + sum(sizes[i] for i in prev) + sep * (len(prev) - 1)
        assert len(prev) == max_count or used + sep + sizes[nxt.start] > max_bytes

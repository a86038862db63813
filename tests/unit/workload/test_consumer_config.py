"""Consumer configuration checks and the wait-time rule (no queue needed)."""

from __future__ import annotations

import pytest

from workload.consumer import ConsumerConfig, _wait_s
from workload.queues.base import Message


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("batch", 0, "an integer from 1 to 20"),
        ("batch", 21, "an integer from 1 to 20"),
        ("concurrency", 0, "an integer from 1 to 1000"),
        ("claim_ttl", 0, "an integer from 1 to 43200, or unset"),
        ("timeout", 0, "a number above 0, or unset"),
        ("max_attempts", -1, "an integer from 0 to"),
        ("max_messages", 0, "an integer of at least 1, or unset"),
        ("prefetch", -1, "an integer from 0 to 1000"),
        ("batch", 2.5, "an integer"),
        ("retry_delay", "5", "a number"),
    ],
)
def test_bad_config_names_field_value_and_range(field, value, words):
    with pytest.raises(ValueError, match=f"^{field}={value!r} is not allowed: {words}"):
        ConsumerConfig(**{field: value}).validate()


def test_defaults_are_valid():
    ConsumerConfig().validate()


def test_wait_is_since_produced_at_when_the_body_has_it_else_the_age():
    assert _wait_s(Message("m", {"produced_at": 100.0}, age=3.0), 112.5) == 12.5
    assert _wait_s(Message("m", {"x": 1}, age=3.25), 112.5) == 3.25
    assert _wait_s(Message("m", "text", age=0.5), 1.0) == 0.5

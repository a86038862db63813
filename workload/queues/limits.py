"""What each service accepts, and the checks every driver runs before sending anything.

One place for the numbers, so a driver never sends a request the service would refuse for a
reason we could have named first (with the value and the allowed range).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from workload.queues.base import (CLAIM_GRACE_RANGE, CLAIM_LIMIT_RANGE, CLAIM_TTL_RANGE, DELAY_RANGE,
                                  MAX_POST_BYTES, MAX_POST_MESSAGES, MESSAGE_TTL_RANGE, InvalidInput,
                                  check_range)


@dataclasses.dataclass(frozen=True)
class Limits:
    """The hard limits of one queue service."""

    service: str
    claim_ttl: tuple[int, int]
    claim_grace: tuple[int, int]
    claim_limit: tuple[int, int]
    message_ttl: tuple[int, int]
    delay: tuple[int, int]
    batch_messages: int  # messages per post request
    batch_bytes: int  # bytes per post request (as the service counts them)
    message_bytes: int  # bytes of one message

    def check_claim(self, limit: int, ttl: int, grace: int) -> None:
        check_range("limit", limit, self.claim_limit)
        check_range("ttl", ttl, self.claim_ttl)
        check_range("grace", grace, self.claim_grace)

    def check_post(self, ttl: int | None, delay: int | None) -> None:
        if ttl is not None:
            check_range("ttl", ttl, self.message_ttl)
        if delay is not None:
            check_range("delay", delay, self.delay)


ZAQAR = Limits("zaqar", CLAIM_TTL_RANGE, CLAIM_GRACE_RANGE, CLAIM_LIMIT_RANGE, MESSAGE_TTL_RANGE,
               DELAY_RANGE, batch_messages=MAX_POST_MESSAGES, batch_bytes=MAX_POST_BYTES,
               message_bytes=MAX_POST_BYTES)

# SQS: VisibilityTimeout 0..43200 (a claim of 0 s would be no claim, so 1..), no grace,
# MaxNumberOfMessages 1..10, MessageRetentionPeriod 60..1209600, DelaySeconds 0..900,
# 10 entries and 256 KiB per SendMessageBatch, 256 KiB per message.
SQS = Limits("sqs", (1, 43200), (0, 43200), (1, 10), (60, 1209600), (0, 900),
             batch_messages=10, batch_bytes=262144, message_bytes=262144)


def encode_json(body: Any, index: int | None = None) -> str:
    """JSON text of a body, or InvalidInput naming the body that cannot be encoded."""
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        name = "body" if index is None else f"bodies[{index}]"
        raise InvalidInput(name, _short(body), f"a JSON-encodable value ({exc})") from None


def _short(value: Any, n: int = 60) -> Any:
    text = repr(value)
    return value if len(text) <= n else text[:n] + "..."

# AMQP (RabbitMQ): no claim expiry (ttl and grace are checked for the contract only), claims of
# 1..20 like Zaqar, no delayed delivery without a plugin. RabbitMQ 3.10 accepts messages up to
# max_message_size (128 MiB); we stop at 16 MiB, since a big message blocks a quorum queue's log,
# and publish at most 100 messages per batch of awaited confirms.
AMQP = Limits("amqp", (1, 43200), (0, 43200), (1, 20), (1, 1209600), (0, 0),
              batch_messages=100, batch_bytes=16 * 1024 * 1024, message_bytes=16 * 1024 * 1024)

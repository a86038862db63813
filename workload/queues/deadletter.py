"""Dead-letter helpers shared by the drivers: the envelope a consumer-side dead-letter writes, and
``redrive`` (dead-letter queue back to the work queue) for any pair of drivers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workload.queues.base import QueueDriver

ENVELOPE_KEY = "dead_letter"


def wrap(
    body: Any, *, queue: str, message_id: str, reason: str, claim_count: int | None = None
) -> dict[str, Any]:
    """The body a consumer-side dead-letter posts: the original body plus where and why."""
    info: dict[str, Any] = {"queue": queue, "original_id": message_id, "reason": reason}
    if claim_count is not None:
        info["claim_count"] = claim_count
    return {ENVELOPE_KEY: info, "body": body}


def unwrap(body: Any) -> tuple[Any, dict[str, Any] | None]:
    """``(original body, dead-letter info)``; info is None for a body the service moved as is."""
    if (
        isinstance(body, dict)
        and set(body) == {ENVELOPE_KEY, "body"}
        and isinstance(body[ENVELOPE_KEY], dict)
        and "original_id" in body[ENVELOPE_KEY]
    ):
        return body["body"], body[ENVELOPE_KEY]
    return body, None


def redrive(
    dead_letters: QueueDriver,
    target: QueueDriver,
    limit: int | None = None,
    batch: int = 10,
    claim_ttl: int = 60,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Move messages from ``dead_letters`` back to ``target`` (original bodies); return how many.

    Each batch is posted to the target before it is deleted here, so a crash in between
    duplicates messages but never loses one. ``limit`` caps the count; ``progress`` is called
    with the running total after each batch.
    """
    moved = 0
    while limit is None or moved < limit:
        want = batch if limit is None else min(batch, limit - moved)
        claim = dead_letters.claim(limit=want, ttl=claim_ttl, grace=claim_ttl)
        if claim is None or not claim.messages:
            break
        target.post([unwrap(m.body)[0] for m in claim.messages])
        for m in claim.messages:
            dead_letters.delete(m, claim)
        moved += len(claim.messages)
        if progress:
            progress(moved)
    return moved

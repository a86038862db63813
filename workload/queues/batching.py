"""Split a list of encoded messages into the batches a service accepts (count and bytes)."""

from __future__ import annotations

from collections.abc import Sequence

from workload.queues.base import InvalidInput


def split_batches(
    sizes: Sequence[int], max_count: int, max_bytes: int, envelope: int = 0, separator: int = 0
) -> list[range]:
    """Group consecutive items into batches of at most ``max_count`` items and ``max_bytes`` bytes.

    ``sizes[i]`` is the encoded size of item i; a batch costs ``envelope`` bytes plus the items
    plus ``separator`` bytes between two items (``,`` in a JSON list). Order is kept. An item that
    cannot fit even alone raises :class:`InvalidInput` naming it and the limit.
    """
    if max_count < 1:
        raise ValueError("max_count must be at least 1")
    batches: list[range] = []
    start, used = 0, envelope
    for i, size in enumerate(sizes):
        if envelope + size > max_bytes:
            raise InvalidInput(
                f"bodies[{i}] size",
                size,
                f"at most {max_bytes - envelope} bytes encoded ({max_bytes} bytes per request)",
            )
        cost = size + (separator if i > start else 0)
        if i > start and (i - start >= max_count or used + cost > max_bytes):
            batches.append(range(start, i))
            start, used, cost = i, envelope, size
        used += cost
    if start < len(sizes):
        batches.append(range(start, len(sizes)))
    return batches

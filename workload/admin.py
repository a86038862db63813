"""Operator commands on a queue and its dead-letter queue: status, redrive, purge, delete, ensure.

Each function takes open queue drivers and returns plain data (the CLI prints it), so the demo
and the tests call them directly.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from workload.queues.base import QueueDriver, QueueError, QueuePolicy

REDRIVE_CLAIM_TTL = 60  # the shortest claim Zaqar allows: a crashed redrive gives messages back soon


def queue_status(queue: QueueDriver) -> dict[str, Any]:
    """Free, claimed, total and oldest age of the queue and of its dead-letter queue.

    A queue whose stats the service cannot give right now shows ``{"error": ...}`` instead
    (Zaqar's redis driver answers 503 on a queue with expired claims until it is collected).
    """
    out: dict[str, Any] = {"ts": round(time.time(), 3)}
    for key, q in (("queue", queue), ("dead_letter_queue", None)):
        if q is None:
            try:
                q = queue.dead_letter_queue()
            except QueueError as exc:
                out[key] = {"name": None, "error": str(exc)}
                continue
        try:
            out[key] = {"name": q.name, **q.stats().as_dict()}
        except QueueError as exc:
            out[key] = {"name": q.name, "error": str(exc)}
    return out


def _age(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}s"


def format_status(status: dict[str, Any]) -> str:
    """One human line per queue."""
    lines = []
    for key in ("queue", "dead_letter_queue"):
        s = status[key]
        label = "queue" if key == "queue" else "dead-letter"
        if "error" in s:
            lines.append(f"{label:12} {s['name'] or '?':24} unavailable: {s['error']}")
        else:
            lines.append(
                f"{label:12} {s['name']:24} free {s['free']:>6}  claimed {s['claimed']:>6}  "
                f"total {s['total']:>6}  oldest {_age(s['oldest_age']):>6}"
            )
    return "\n".join(lines)


def watch_status(
    queue: QueueDriver,
    interval: float,
    as_json: bool,
    out: TextIO = sys.stdout,
    count: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Print the status every ``interval`` seconds (``count`` times, or until ``should_stop``)."""
    n = 0
    while not should_stop():
        status = queue_status(queue)
        out.write(
            (json.dumps(status) if as_json else time.strftime("%H:%M:%S ") + "\n" + format_status(status))
            + "\n"
        )
        out.flush()
        n += 1
        if count is not None and n >= count:
            break
        end = time.monotonic() + interval
        while time.monotonic() < end and not should_stop():
            time.sleep(min(0.2, interval))
    return n


def redrive(
    queue: QueueDriver, count: int | None = None, batch: int = 10, progress: TextIO | None = None
) -> dict[str, Any]:
    """Move up to ``count`` messages (None: all that can be claimed) from the dead-letter queue
    back to ``queue``, with their original bodies. Each batch is posted to the queue before it is
    deleted from the dead-letter queue, so a failure in between duplicates messages but never
    loses one (:func:`workload.queues.redrive` does the moving)."""
    from workload.queues import redrive as move

    dlq = queue.dead_letter_queue()
    report = (lambda n: print(f"redrive: moved {n}", file=progress, flush=True)) if progress else None
    moved = move(dlq, queue, limit=count, batch=batch, claim_ttl=REDRIVE_CLAIM_TTL, progress=report)
    result: dict[str, Any] = {
        "event": "redrive",
        "queue": queue.name,
        "dead_letter_queue": dlq.name,
        "moved": moved,
    }
    try:
        st = dlq.stats()
        result["left"] = st.total
        if st.claimed:
            result["note"] = (
                f"{st.claimed} dead-lettered message(s) are still claimed (the service "
                "ties a message it moved to its last claim): run redrive again after "
                "that claim expires"
            )
    except QueueError as exc:
        result["left"] = None
        result["note"] = f"dead-letter queue stats unavailable: {exc}"
    return result


def purge(queue: QueueDriver, dead_letter: bool = False) -> dict[str, Any]:
    """Delete every message of the queue (and of its dead-letter queue with ``dead_letter``)."""
    queue.purge()
    purged = [queue.name]
    if dead_letter:
        dlq = queue.dead_letter_queue()
        dlq.purge()
        purged.append(dlq.name)
    return {"event": "purge", "purged": purged}


def delete(queue: QueueDriver) -> dict[str, Any]:
    """Delete the queue and its dead-letter queue (missing ones are not an error)."""
    names = [queue.name]
    try:
        names.append(queue.dead_letter_queue().name)
    except QueueError:
        pass
    queue.drop()
    return {"event": "delete", "deleted": names}


def ensure(queue: QueueDriver, policy: QueuePolicy) -> dict[str, Any]:
    """Create the queue and its dead-letter queue with ``policy`` (or update their policy)."""
    policy.validate()
    queue.ensure(policy)
    return {
        "event": "ensure",
        "queue": queue.name,
        "policy": {k: getattr(policy, k) for k in policy.__dataclass_fields__},
    }

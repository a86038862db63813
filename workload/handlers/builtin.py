"""Ready-made python handlers for demos and benchmarks (``--python workload.handlers.builtin:NAME``)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from workload.handlers import Reject


def noop(body: Any) -> None:
    """Do nothing: every message is done at once (throughput benchmark)."""
    return None


def echo(body: Any) -> Any:
    """Reply with the body itself."""
    return body


def sleep(body: Any) -> None:
    """Sleep ``body["work_s"]`` seconds (default 0), then done: a job of a given length."""
    if isinstance(body, dict):
        time.sleep(float(body.get("work_s") or 0))


def widget(body: Any) -> dict[str, Any]:
    """The widget maker of the request/response seed: validate ``widget_id`` and create it.

    A widget id that is not a UUID can never succeed: it is rejected (dead-lettered at once).
    ``work_s`` in the body is the time the making takes. The reply is the widget's record.
    """
    if not isinstance(body, dict) or "widget_id" not in body:
        raise Reject("no widget_id in the request")
    try:
        widget_id = str(uuid.UUID(str(body["widget_id"])))
    except ValueError:
        raise Reject(f"invalid widget id {body['widget_id']!r}") from None
    time.sleep(float(body.get("work_s") or 0))
    return {"widget_id": widget_id, "status": "created", "seq": body.get("seq")}


def flaky_widget(body: Any) -> dict[str, Any]:
    """Like :func:`widget`, but an invalid id fails with a plain error (retried until the queue's
    max-claims policy, or the consumer's --max-attempts, dead-letters it): a poison message."""
    try:
        return widget(body)
    except Reject as exc:
        raise RuntimeError(str(exc)) from None

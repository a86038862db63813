"""Message handlers: what the consumer runs for each message.

Three kinds, one contract (:class:`Handler`): ``exec`` runs a program with the body on stdin
(exit 0 = done, anything else = retry, like ``amqp-consume``); ``python`` calls
``package.module:function`` (its return value is the reply, an exception means retry,
:class:`Reject` means dead-letter now); ``http`` POSTs the body (2xx = done).
"""

from __future__ import annotations

import abc
import dataclasses
import json
from typing import Any

from workload.queues.base import Message

#: Outcomes a handler can report; the consumer adds ``dead-letter`` and ``released``.
DONE, RETRY, TIMEOUT, REJECT = "done", "retry", "timeout", "reject"
KINDS = ("exec", "python", "http")


class Reject(Exception):
    """Raised by a python handler for a message that can never succeed: dead-letter it now."""


@dataclasses.dataclass
class Result:
    """What a handler made of one message.

    ``outcome`` is ``done``, ``retry``, ``timeout`` or ``reject``; ``reply`` is the output to post
    to the reply queue (None: nothing); ``error`` a short reason when not done.
    """

    outcome: str
    reply: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == DONE


@dataclasses.dataclass(frozen=True)
class Context:
    """What a handler may know besides the message: the claim and the queue it came from."""

    queue: str
    claim_id: str | None
    timeout: float | None  # seconds the handler may run; None = no limit


class Handler(abc.ABC):
    """Base class: :meth:`handle` one message; :meth:`cancel` stops running work at shutdown."""

    kind = "?"

    @abc.abstractmethod
    def handle(self, message: Message, ctx: Context) -> Result:
        """Run the work for one message and say how it ended (done, retry, reject, timeout)."""

    def cancel(self) -> None:
        """Stop work still running (kill child processes). Called when the drain time is over."""

    def describe(self) -> str:
        return self.kind


def body_bytes(body: Any) -> bytes:
    """The bytes a program or web service receives: a text body as is, anything else as JSON."""
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, separators=(",", ":")).encode()


def parse_reply(raw: bytes | str) -> Any:
    """A handler's output as a reply: JSON when it parses, else the stripped text; empty = None."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def make_handler(kind: str, target: str | list[str], timeout: float | None = None) -> Handler:
    """Build a handler: ``exec`` with an argv (list or shell-like string), ``python`` with
    ``pkg.mod:func``, ``http`` with a URL. Raises ValueError naming what is wrong."""
    if kind == "exec":
        from workload.handlers.exec import ExecHandler

        return ExecHandler(target)
    if kind == "python":
        from workload.handlers.python import PythonHandler

        return PythonHandler(target if isinstance(target, str) else " ".join(target))
    if kind == "http":
        from workload.handlers.http import HttpHandler

        return HttpHandler(target if isinstance(target, str) else " ".join(target))
    raise ValueError(f"handler kind {kind!r} is not allowed: one of {', '.join(KINDS)}")

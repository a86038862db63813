"""The ``python`` handler: call ``package.module:function`` with each message's body.

The function is called as ``func(body)``, or ``func(body, message)`` if it takes two positional
parameters. Its return value is the reply (None: no reply). Raising :class:`workload.handlers.Reject`
dead-letters the message at once; any other exception means retry. A call cannot be interrupted:
one that returns after the per-message timeout counts as ``timeout`` and its result is dropped.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable
from typing import Any

from workload.handlers import DONE, REJECT, RETRY, TIMEOUT, Context, Handler, Reject, Result
from workload.queues.base import Message


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``package.module:function`` (dots after the colon reach attributes)."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"python handler {spec!r} is not allowed: write it as package.module:function")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"python handler {spec!r}: cannot import {mod_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"python handler {spec!r}: {mod_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"python handler {spec!r} is not callable")
    return obj


def _wants_message(func: Callable[..., Any]) -> bool:
    try:
        params = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


class PythonHandler(Handler):
    kind = "python"

    def __init__(self, spec: str):
        self.spec = spec
        self.func = load_callable(spec)
        self._with_message = _wants_message(self.func)

    def describe(self) -> str:
        return "python " + self.spec

    def handle(self, message: Message, ctx: Context) -> Result:
        start = time.monotonic()
        try:
            reply = self.func(message.body, message) if self._with_message else self.func(message.body)
        except Reject as exc:
            return Result(REJECT, error=f"rejected: {exc}" if str(exc) else "rejected")
        except Exception as exc:  # noqa: BLE001 - the handler's own failure: retry the message
            return Result(RETRY, error=f"{type(exc).__name__}: {exc}"[:400])
        if ctx.timeout is not None and time.monotonic() - start > ctx.timeout:
            return Result(TIMEOUT, error=f"returned after the {ctx.timeout:g} s timeout")
        return Result(DONE, reply=reply)

"""The project's one error grammar, ``key=value is not allowed: what is``, with no dependencies:
the queue drivers (workload/queues/base.py) and the settings (workload/settings.py, which imports
the drivers) both word their refusals with it."""

from __future__ import annotations

from typing import Any


def not_allowed(key: str, value: Any, allowed: str) -> str:
    """``key=value is not allowed: allowed`` (the value as its repr, so a string shows its quotes)."""
    return f"{key}={value!r} is not allowed: {allowed}"

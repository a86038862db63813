"""Helpers of the infra tests (a module of its own: several conftest.py files share one name)."""

from __future__ import annotations

import os
from pathlib import Path

from infra import render as render_mod

REPO = Path(__file__).resolve().parents[2]
STACKS = render_mod.stack_names()
_CACHE: dict = {}


async def _look(stack):
    """Values only the running program can see: resolved outputs and their secret flags."""
    c, g = stack.credentials, stack.group
    seen = {
        "consumer_secret_is_secret": await c.consumer_secret.is_secret(),
        "consumer_secret": await c.consumer_secret.future(),
        "scale_up_url": await g.scale_up_url.future(),
        "scale_down_url": await g.scale_down_url.future(),
    }
    if stack.monitor:
        seen["monitor_secret_is_secret"] = await c.monitor_secret.is_secret()
        seen["monitor_user_data"] = await stack.monitor.server.user_data.future()
    return seen


def rendered(name: str) -> render_mod.Rendered:
    """The example stack ``name`` run under mocks (once per test session)."""
    if name not in _CACHE:
        _CACHE[name] = render_mod.render(name, inspect=_look)
    return _CACHE[name]


def heat_python() -> Path:
    """The OpenStack venv's python: $QW_OPENSTACK_VENV (the Makefile exports it) or the repo's
    .venv-openstack."""
    venv = Path(os.environ.get("QW_OPENSTACK_VENV") or REPO / ".venv-openstack")
    return venv / "bin" / "python"

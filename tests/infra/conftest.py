"""Shared helpers for the infra tests: the example stacks rendered once under Pulumi's mocks."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture(params=STACKS)
def stack(request) -> render_mod.Rendered:
    """Each example stack, rendered under mocks."""
    return rendered(request.param)


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    """Tests open Pulumi.<stack>.yaml by relative path, as a user in the project would."""
    monkeypatch.chdir(REPO)


def heat_python() -> Path:
    venv = Path(os.environ.get("QW_HEAT_VENV") or REPO / ".venv-heat")
    return venv / "bin" / "python"

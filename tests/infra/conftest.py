"""Fixtures of the infra tests: the example stacks rendered once under Pulumi's mocks."""

from __future__ import annotations

import pytest
from infra_testlib import REPO, STACKS, rendered

from infra import render as render_mod


@pytest.fixture(params=STACKS)
def stack(request) -> render_mod.Rendered:
    """Each example stack, rendered under mocks."""
    return rendered(request.param)


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    """Tests open Pulumi.<stack>.yaml by relative path, as a user in the project would."""
    monkeypatch.chdir(REPO)

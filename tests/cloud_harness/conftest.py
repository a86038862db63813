"""Fixtures of the local-deployment tests: the demo project's view of the local cloud."""

from __future__ import annotations

import pytest
from harness_testlib import Project


@pytest.fixture(scope="module")
def project(controlplane):
    return Project(controlplane.session("local"))

"""Session-wide fixtures: the real local queue services every integration test talks to.

- ``zaqar``: a :class:`devenv.zaqar.LocalZaqar` (``.url``, ``.project``, ``.queue_options``,
  ``.env()``, ``.log_path(name)``), started once per session, only if a test asks for it.
- ``sqs``: a :class:`devenv.sqs.LocalSQS` (moto's server; ``.url``, ``.region``,
  ``.queue_options``, ``.env()``).
- ``queue_name``: a factory of unique queue names. Zaqar's redis driver leaves a deleted queue's
  claims behind, so a re-created queue of the same name would report stale counts.

Subfolders add their own conftest.py for fixtures that concern only them.
"""
from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="session")
def zaqar():
    """A real Zaqar 23 + redis on loopback for the whole session."""
    from devenv.zaqar import LocalZaqar

    with LocalZaqar() as server:
        yield server


@pytest.fixture(scope="session")
def sqs():
    """moto's SQS server on 127.0.0.1 for the whole session."""
    from devenv.sqs import LocalSQS

    with LocalSQS() as server:
        yield server


@pytest.fixture
def queue_name():
    """Factory: ``queue_name(prefix="t")`` gives a fresh name like ``t-3f9c0a1b2c``."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make

"""The policies make the recorded decisions on the recorded observations (see recorded.py):
a refactoring keeps them identical; a change of behaviour re-records them on purpose."""

from __future__ import annotations

import json

import pytest

from tests.unit.autoscale.recorded import FIXTURE, replay

CASES = json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("case", CASES, ids=[f"{c['argv'][1]}-{c['trace']}" for c in CASES])
def test_same_decisions_on_recorded_observations(case):
    want = [(look["desired"], look["reason"]) for look in case["looks"]]
    got = replay(case)
    first = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), None)
    assert first is None, (
        f"look {first}: {case['looks'][first]['obs']} -> {got[first]}, recorded {want[first]}"
    )

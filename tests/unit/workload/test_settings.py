"""The one declaration of every option: text round trips, env errors, backends (no services)."""

from __future__ import annotations

import pytest

from workload import settings
from workload.autoscale.monitor import monitor_settings
from workload.consumer import ConsumerConfig

DECLARED = settings.connection_settings() + settings.declared(ConsumerConfig) + monitor_settings()


@pytest.mark.parametrize("s", DECLARED, ids=lambda s: s.name)
def test_each_default_is_allowed_and_its_env_text_reads_back(s):
    assert s.check(s.default) == s.default
    if s.default is not None:
        assert s.parse(s.text(s.default)) == s.default


@pytest.mark.parametrize("s", [s for s in DECLARED if s.kind in (int, float) and s.env], ids=lambda s: s.name)
def test_a_bad_environment_value_names_the_variable_and_what_is_allowed(s):
    with pytest.raises(settings.SettingError) as e:
        s.from_env({s.env[0]: "lots"})
    assert str(e.value) == f"environment variable {s.env[0]}='lots' is not allowed: {s.allowed()}"


def test_empty_variables_leave_the_default():
    queue = next(s for s in settings.connection_settings() if s.name == "queue")
    assert queue.from_env({"QW_QUEUE": ""}) is settings.NOT_SET


def test_each_backend_is_one_declaration_with_its_driver_keywords():
    assert {"zaqar", "sqs"} <= set(settings.backends())
    zaqar = settings.BACKEND_REGISTRY["zaqar"]
    assert zaqar.driver_names == {
        "zaqar_url": "url",
        "project": "project",
        "os_cloud": "cloud",
        "region": "region",
    }
    with pytest.raises(settings.SettingError, match=r"--claim-ttl=30 is not allowed: from 60 to 43200"):
        zaqar.check_limits(settings.declared(ConsumerConfig), {"claim_ttl": 30})

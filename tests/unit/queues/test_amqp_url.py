"""AMQP URLs: what the driver accepts, where credentials come from, and that a password never shows."""
from __future__ import annotations

import pytest

from workload.queues import InvalidInput, QueuePolicy, open_queue
from workload.queues.amqp import parse_url


def test_credentials_from_the_url_and_the_defaults_of_each_scheme():
    a = parse_url("amqp://alice:s%40cret@broker.example:5673/jobs", environ={})
    assert (a.user, a.password, a.host, a.port, a.vhost) == ("alice", "s@cret", "broker.example", 5673, "jobs")
    assert a.management_url == "http://broker.example:15672"
    tls = parse_url("amqps://bob:pw@broker.example", environ={})
    assert (tls.port, tls.vhost, tls.management_url) == (5671, "/", "https://broker.example:15671")


def test_environment_credentials_override_the_url():
    a = parse_url("amqp://broker.example/", environ={"QW_AMQP_USER": "carol", "QW_AMQP_PASSWORD": "env-pw"})
    assert (a.user, a.password) == ("carol", "env-pw")
    assert "carol:env-pw@" in a.url


def test_the_password_is_never_shown():
    a = parse_url("amqp://alice:hunter2-secret@broker.example/", environ={})
    assert "hunter2-secret" not in str(a) + repr(a)
    assert "alice:***@broker.example" in str(a)


@pytest.mark.parametrize("url,allowed", [
    ("http://alice:hunter2-secret@broker.example/", "amqp://USER:PASSWORD@HOST:PORT/VHOST"),
    ("amqp://alice:hunter2-secret@broker.example:port/", "a valid URL"),
    ("", "QW_AMQP_URL"),
    (None, "--amqp-url"),
])
def test_a_url_that_is_not_an_amqp_url_is_refused_by_name(url, allowed):
    with pytest.raises(InvalidInput) as err:
        parse_url(url, environ={})
    assert "amqp url" in str(err.value) and allowed in str(err.value)
    assert "hunter2-secret" not in str(err.value)


def test_a_delay_is_refused_on_amqp_before_anything_is_sent():
    with pytest.raises(InvalidInput) as err:
        open_queue("amqp", "jobs", url="amqp://u:p@127.0.0.1:1/", policy=QueuePolicy(delay=5))
    assert "delayed" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        open_queue("amqp", "jobs", url="amqp://u:p@127.0.0.1:1/", prefetch=0)
    assert "prefetch=0" in str(err.value) and "1 to 1000" in str(err.value)

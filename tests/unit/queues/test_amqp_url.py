"""AMQP URLs: what the driver accepts, where credentials come from, and that a password never shows."""

from __future__ import annotations

import pytest

from workload.queues import InvalidInput, QueuePolicy, open_queue
from workload.queues.amqp_address import parse_url, resolve


def test_credentials_from_the_url_and_the_defaults_of_each_scheme():
    a = parse_url("amqp://alice:s%40cret@broker.example:5673/jobs", environ={})
    assert (a.user, a.password, a.host, a.port, a.vhost) == (
        "alice",
        "s@cret",
        "broker.example",
        5673,
        "jobs",
    )
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


@pytest.mark.parametrize(
    "url,allowed",
    [
        ("http://alice:hunter2-secret@broker.example/", "amqp://USER:PASSWORD@HOST:PORT/VHOST"),
        ("amqp://alice:hunter2-secret@broker.example:port/", "a valid URL"),
        ("", "QW_AMQP_URL"),
        (None, "--amqp-url"),
    ],
)
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


def _config(tmp_path, text: str) -> dict[str, str]:
    path = tmp_path / "amqp.yaml"
    path.write_text(text)
    return {"QW_AMQP_CONFIG": str(path)}


def test_a_broker_from_a_clouds_style_file(tmp_path):
    env = _config(
        tmp_path,
        """brokers:
  prod:
    url: amqps://broker.example/jobs
    user: worker
    password: file-secret
    management_url: https://broker.example:15671
    cafile: /etc/ssl/private-ca.pem
  test:
    url: amqp://other.example/
""",
    )
    a = resolve(None, environ={**env, "QW_AMQP_BROKER": "prod"})
    assert (a.user, a.password, a.host, a.port, a.vhost) == (
        "worker",
        "file-secret",
        "broker.example",
        5671,
        "jobs",
    )
    assert a.management_url == "https://broker.example:15671"
    assert a.url.endswith("?cafile=/etc/ssl/private-ca.pem")
    overridden = resolve(None, environ={**env, "QW_AMQP_BROKER": "prod", "QW_AMQP_PASSWORD": "env-wins"})
    assert overridden.password == "env-wins"
    assert resolve("amqp://u:p@given.example/", environ=env).host == "given.example"  # a URL wins


def test_a_config_file_that_names_no_usable_broker_is_refused_by_name(tmp_path):
    env = _config(tmp_path, "brokers:\n  a: {url: 'amqp://a/'}\n  b: {url: 'amqp://b/'}\n")
    with pytest.raises(InvalidInput) as err:
        resolve(None, environ=env)  # two brokers, none chosen
    assert "QW_AMQP_BROKER" in str(err.value) and "a, b" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        resolve(None, environ={"QW_AMQP_CONFIG": str(tmp_path / "missing.yaml")})
    assert "QW_AMQP_CONFIG" in str(err.value)

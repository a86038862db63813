"""queueBackend amqp with an existing broker: its settings, its env files and what the program declares.

The queue pair's provider against a real RabbitMQ is in test_infra_amqp_provider.py.
"""

from __future__ import annotations

import base64

import pytest
import yaml

from infra import config as C
from infra import hot
from infra import render as render_mod

BASE = {"cloud": "mycloud", "region": "RegionOne", "flavor": "m1.small", "network": "private"}
URL = "amqps://qw-admin:s3cret-admin@rabbit.example.net:5671/prod"
MGMT = "https://rabbitmq.example.net:15671"  # Pulumi.ord.yaml's
SECRETS = ["amqpUrl", "amqpConsumerPassword", "amqpMonitorPassword"]


def load(**over):
    return C.load({**BASE, **over}, secret_keys=SECRETS)


def amqp(**over):
    return load(**{"queueBackend": "amqp", "amqpUrl": URL, **over})


def test_amqp_without_a_broker_url_is_refused_naming_the_key():
    with pytest.raises(C.ConfigError) as e:
        load(queueBackend="amqp")
    assert e.value.key == "amqpUrl" and "amqpBroker 'existing'" in str(e.value)
    assert "pulumi config set --secret amqpUrl" in str(e.value)


def test_unknown_backend_and_broker_name_what_is_allowed():
    with pytest.raises(C.ConfigError) as e:
        load(queueBackend="rabbit")
    assert e.value.key == "queueBackend" and "'zaqar', 'amqp'" in str(e.value)
    with pytest.raises(C.ConfigError) as e:
        amqp(amqpBroker="cluster")
    assert e.value.key == "amqpBroker" and "'existing'" in str(e.value)


def test_broker_url_is_a_secret_and_never_echoed():
    with pytest.raises(C.ConfigError) as e:
        C.load({**BASE, "queueBackend": "amqp", "amqpUrl": URL})  # stored in plain text
    assert "--secret" in str(e.value) and "s3cret" not in str(e.value)
    with pytest.raises(C.ConfigError) as e:
        amqp(amqpUrl="http://u:s3cret@rabbit.example.net/")
    assert e.value.key == "amqpUrl" and "amqps://" in str(e.value) and "s3cret" not in str(e.value)


@pytest.mark.parametrize(
    "over,key,words",
    [
        # the broker settings go with queueBackend amqp
        (
            {"queueBackend": "zaqar", "amqpUrl": "", "amqpManagementUrl": "https://rabbit.example.net:15671"},
            "amqpManagementUrl",
            "unless queueBackend is 'amqp'",
        ),
        (
            {"amqpManagementUrl": "https://admin:pw@rabbit.example.net:15671"},
            "amqpManagementUrl",
            "without user or password",
        ),
        ({"amqpConsumerUser": "qw-consumer"}, "amqpConsumerPassword", "amqpConsumerUser"),
        ({"amqpMonitorPassword": "pw"}, "amqpMonitorUser", "amqpMonitorPassword"),
        (
            {"amqpMonitorUser": "qw-monitor", "amqpMonitorPassword": "line one\nline-two-s3cret"},
            "amqpMonitorPassword",
            "one line",
        ),
        ({"consumerEnv": '{"QW_AMQP_URL": "amqp://x:s3cret@elsewhere/"}'}, "consumerEnv", "QW_AMQP_URL"),
    ],
)
def test_amqp_rules_name_the_key_and_never_echo_a_secret(over, key, words):
    with pytest.raises(C.ConfigError) as e:
        amqp(**over)
    assert e.value.key == key and words in str(e.value) and "s3cret" not in str(e.value), str(e.value)


def test_env_files_plain_part_names_the_backend_secret_part_the_broker():
    cfg = amqp(
        amqpManagementUrl="https://rabbit.example.net:15671",
        amqpConsumerUser="qw-consumer",
        amqpConsumerPassword="c0nsumer-pw",
    )
    plain = hot.consumer_env(cfg)
    assert plain["QW_QUEUE_BACKEND"] == "amqp"
    assert plain["QW_AMQP_MANAGEMENT_URL"] == "https://rabbit.example.net:15671"
    assert not any("s3cret" in v or "c0nsumer-pw" in v for v in plain.values())
    assert hot.amqp_secret_env(cfg, "consumer") == {
        "QW_AMQP_URL": URL,
        "QW_AMQP_USER": "qw-consumer",
        "QW_AMQP_PASSWORD": "c0nsumer-pw",
    }
    # no monitor user: the monitor logs in as amqpUrl's user
    assert hot.amqp_secret_env(cfg, "monitor") == {"QW_AMQP_URL": URL}
    assert hot.amqp_secret_env(load(), "consumer") == {} and "QW_AMQP_URL" not in hot.consumer_env(load())


# -- the program under Pulumi's mocks ---------------------------------------------------------------
async def _look(stack):
    return {"monitor_user_data": await stack.monitor.server.user_data.future()}


@pytest.fixture(scope="module")
def stack():
    doc = yaml.safe_load((render_mod.ROOT / "Pulumi.ord.yaml").read_text())
    raw = {k.split(":", 1)[1]: v for k, v in doc["config"].items()}
    raw.update(amqpUrl=URL, amqpConsumerPassword="c0nsumer-pw", amqpMonitorPassword="m0nitor-pw")
    return render_mod.render("ord", cfg_override=raw, secret_keys=SECRETS, inspect=_look)


def _one(stack, suffix):
    (found,) = [r for r in stack.resources if r.type.endswith(suffix)]
    return found


def test_queue_pair_on_the_broker_with_the_url_as_secret(stack):
    pair = _one(stack, "QueuePair")
    assert pair.inputs["backend"] == "amqp" and pair.inputs["name"] == "orders"
    assert pair.inputs["url"] == URL and pair.inputs["management_url"] == MGMT
    assert pair.inputs["policy"]["max_claims"] == 4
    assert "url" in pair.secret_inputs  # encrypted in state (the output too: additional_secret_outputs)


def test_consumers_get_their_own_broker_user_in_the_hidden_parameter(stack):
    st = _one(stack, "StackV1")
    assert "s3cret" not in stack.template_text and "c0nsumer-pw" not in stack.template_text
    assert "QW_QUEUE_BACKEND=amqp" in stack.template_text
    creds = base64.b64decode(st.inputs["parameters"][hot.P_CREDENTIALS_ENV]).decode().splitlines()
    assert f"QW_AMQP_URL={URL}" in creds and "QW_AMQP_USER=qw-consumer" in creds
    assert "QW_AMQP_PASSWORD=c0nsumer-pw" in creds
    assert any(p.startswith("parameters") for p in st.secret_inputs)


def test_monitor_gets_its_own_broker_user_in_secret_user_data(stack):
    ud = yaml.safe_load(stack.inspected["monitor_user_data"].split("\n", 1)[1])
    plain = ud["write_files"][0]["content"].splitlines()
    assert "QW_QUEUE_BACKEND=amqp" in plain and f"QW_AMQP_MANAGEMENT_URL={MGMT}" in plain
    assert not any("pw" in line.split("=", 1)[-1] for line in plain if line.startswith("QW_AMQP"))
    creds = base64.b64decode(ud["write_files"][1]["content"]).decode().splitlines()
    assert "QW_AMQP_USER=qw-monitor" in creds and "QW_AMQP_PASSWORD=m0nitor-pw" in creds
    assert ud["write_files"][1]["permissions"] == "0600"
    assert "userData" in _one(stack, "Instance").secret_inputs

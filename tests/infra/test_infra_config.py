"""Every stack setting's validation: each error names the key, the value and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from infra import config as C
from infra.render import ROOT, flatten, stack_names

BASE = {"cloud": "mycloud", "region": "RegionOne", "flavor": "m1.small", "network": "private"}


def load(**over):
    raw = {**BASE, **{k: v for k, v in over.items() if v is not None}}
    for k, v in over.items():
        if v is None:
            raw.pop(k, None)
    return C.load(raw)


def test_minimal_config_gets_documented_defaults():
    cfg = load()
    assert (cfg.min_size, cfg.desired_size, cfg.max_size) == (1, 1, 10)
    assert cfg.monitor_flavor == "m1.small"  # defaults to flavor
    assert cfg.queue_name == "jobs" and cfg.dead_letter_queue == "jobs-dlq"
    assert cfg.ssh_cidrs == () and cfg.monitor_enabled is True
    assert cfg.queue_policy.claim_ttl == 300


@pytest.mark.parametrize("name", stack_names())
def test_example_stacks_validate(name):
    doc = yaml.safe_load((ROOT / f"Pulumi.{name}.yaml").read_text())
    flat, secrets = flatten(doc)
    cfg = C.load({k.split(":", 1)[1]: v for k, v in flat.items()}, [k.split(":", 1)[1] for k in secrets])
    # a region's stack is named after it; the local cloud's stack runs in its only region
    assert cfg.region.upper() == ("REGIONONE" if name == "local" else name.upper())


def test_example_stack_files_comment_every_key():
    for name in stack_names():
        lines = (ROOT / f"Pulumi.{name}.yaml").read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("  queue-workers:"):
                assert lines[i - 1].strip().startswith("#"), f"Pulumi.{name}.yaml: no comment above {line!r}"


def test_there_are_two_regions():
    regions = set()
    for name in stack_names():
        doc = yaml.safe_load((ROOT / f"Pulumi.{name}.yaml").read_text())
        regions.add(doc["config"]["queue-workers:region"])
    assert len(regions) >= 2


@pytest.mark.parametrize("key", ["cloud", "region", "flavor", "network"])
def test_required_keys(key):
    with pytest.raises(C.ConfigError) as e:
        load(**{key: None})
    assert e.value.key == key and "required" in str(e.value) and f"pulumi config set {key}" in str(e.value)


# (key, bad value, words the message must hold)
SINGLE = [
    ("region", "has space", "letters, digits"),
    ("amqpBroker", "cluster", "one of 'existing'"),
    ("amqpManagementUrl", "ftp://rabbit", "an http(s) URL without user or password"),
    ("amqpConsumerUser", "a b", "a user name or empty"),
    ("amqpMonitorUser", "a/b", "a user name or empty"),
    ("cloud", "", "letters, digits"),
    ("flavor", "m1 small", "letters, digits"),
    ("network", "-x", "letters, digits"),
    ("keyPair", "bad key", "key pair name"),
    ("identityEndpoint", "keystone.example", "http(s) URL"),
    ("desiredSize", "5000", "from -1 to 1000"),
    ("scaleUpStep", "0", "from 1 to 100"),
    ("scaleDownStep", "101", "from 1 to 100"),
    ("monitorFlavor", "a b", "flavor name"),
    ("rollingPause", "-1", "from 0 to 3600"),
    ("claimTtl", "59", "from 60 to 43200"),
    ("claimTtl", "43201", "from 60 to 43200"),
    ("claimGrace", "30", "from 60 to 43200"),
    ("maxClaims", "1001", "from 0 to 1000"),
    ("messageTtl", "10", "from 60 to 1209600"),
    ("deadLetterTtl", "1209601", "from 60 to 1209600"),
    ("queueName", "bad/name", "Zaqar's queue-name rule"),
    ("queueName", "q" * 61, "1 to 60"),
    ("queueBackend", "rabbitmq", "one of 'zaqar'"),
    ("sshCidrs", '["10.0.0.1/24"]', "no host bits"),
    ("sshCidrs", '["everywhere"]', "CIDR"),
    ("sshCidrs", '"10.0.0.0/8"', "a list"),
    ("sshCidrs", "[unclosed", "YAML or JSON"),
    ("templateImageName", "", "letters, digits"),
    ("templateImageProperties", '["a"]', "a map"),
    ("monitorEnabled", "maybe", "true or false"),
    ("handler", "run-this", "exec:<command>"),
    ("consumerEnv", '{"PATH": "/x"}', "starting with QW_"),
    ("consumerEnv", '{"QW_X": "a\\nb"}', "no line breaks"),
    ("credentialRoles", '["bad role"]', "letters, digits"),
    ("credentialExpiresAt", "next week", "ISO 8601"),
    ("stackTimeout", "0", "from 1 to 1440"),
    ("serverName", "Qw_Worker", "lower-case"),
    ("rollingBatchSize", "0", "from 1 to 100"),
    ("amqpBrokerImage", "rabbitmq", "pinned by tag or digest"),
    ("amqpBrokerImage", "rabbitmq:latest", "not :latest"),
    ("amqpBrokerImage", "Rabbit MQ:3", "pinned by tag or digest"),
    ("amqpBrokerFlavor", "m1 small", "a flavor name or empty"),
    ("amqpBrokerVolumeSize", "-1", "from 0 to 16384"),
]


@pytest.mark.parametrize("key,value,words", SINGLE)
def test_each_bad_value_is_named(key, value, words):
    with pytest.raises(C.ConfigError) as e:
        load(**{key: value})
    msg = str(e.value)
    assert e.value.key == key
    assert msg.startswith(f"queue-workers:{key}={value!r} is not allowed: "), msg
    assert words in msg, msg


def _bad_values(opt):
    """Values just outside a workload option's declared range (or of the wrong type)."""
    if opt.kind is bool:
        return ["maybe"]
    if opt.choices:
        return ["pid"]
    bad = ["soon"]
    if opt.lo is not None:
        bad.append(str(opt.lo if opt.lo_open else opt.lo - 1))
    if opt.hi is not None:
        bad.append(str(opt.hi + 1))
    if opt.kind is int:
        bad.append("2.5")
    return bad


WORKLOAD = [(s.key, v, s.option.allowed()) for s in C.SCHEMA if s.option for v in _bad_values(s.option)]


@pytest.mark.parametrize("key,value,words", WORKLOAD)
def test_each_bad_workload_option_value_is_named_with_the_option_own_range(key, value, words):
    test_each_bad_value_is_named(key, value, words)


def test_every_setting_has_an_error_test():
    tested = {k for k, _, _ in SINGLE + WORKLOAD} | {
        "cloud",
        "region",
        "flavor",
        "network",
        "consumerSecretEnv",
    }
    tested |= {"amqpUrl", "amqpConsumerPassword", "amqpMonitorPassword"}  # secrets: test_infra_amqp.py
    assert set(C.SETTINGS) - tested == set()


@pytest.mark.parametrize(
    "over,key,words",
    [
        ({"minSize": "5", "maxSize": "3"}, "minSize", "at most maxSize (3)"),
        (
            {"minSize": "2", "maxSize": "4", "desiredSize": "5"},
            "desiredSize",
            "from minSize (2) to maxSize (4)",
        ),
        (
            {"minSize": "2", "maxSize": "4", "desiredSize": "1"},
            "desiredSize",
            "from minSize (2) to maxSize (4)",
        ),
        (
            {"scalingPolicy": "threshold", "scaleUpThreshold": "10", "scaleDownThreshold": "10"},
            "scaleDownThreshold",
            "less than scaleUpThreshold (10)",
        ),
        ({"maxSize": "0", "minSize": "0"}, "maxSize", "at least 1"),
        ({"maxSize": "2", "scaleUpStep": "3"}, "scaleUpStep", "at most maxSize (2)"),
        ({"maxSize": "2", "rollingBatchSize": "3"}, "rollingBatchSize", "at most maxSize (2)"),
        ({"messageTtl": "7200", "deadLetterTtl": "3600"}, "deadLetterTtl", "at least messageTtl (7200)"),
        ({"consumerEnv": '{"QW_QUEUE": "other"}'}, "consumerEnv", "names the stack does not set itself"),
    ],
)
def test_cross_field_rules(over, key, words):
    with pytest.raises(C.ConfigError) as e:
        load(**over)
    assert e.value.key == key and words in str(e.value), str(e.value)


def test_target_policy_ignores_threshold_order():
    cfg = load(scalingPolicy="target", scaleUpThreshold="10", scaleDownThreshold="20")
    assert cfg.scaling_policy == "target"


def test_the_stack_monitor_runs_the_target_policy_by_default():
    assert load().scaling_policy == "target"


def test_unknown_key_suggests_the_known_one():
    with pytest.raises(C.ConfigError) as e:
        load(minsize="2")
    assert e.value.key == "minsize" and "did you mean 'minSize'" in str(e.value)


def test_secret_setting_must_be_stored_as_secret():
    with pytest.raises(C.ConfigError) as e:
        C.load({**BASE, "consumerSecretEnv": '{"QW_TOKEN": "hunter2"}'})
    assert "--secret" in str(e.value) and "hunter2" not in str(e.value)
    cfg = C.load({**BASE, "consumerSecretEnv": '{"QW_TOKEN": "hunter2"}'}, secret_keys=["consumerSecretEnv"])
    assert cfg.consumer_secret_env == {"QW_TOKEN": "hunter2"}


def test_secret_values_never_appear_in_errors():
    with pytest.raises(C.ConfigError) as e:
        C.load({**BASE, "consumerSecretEnv": '{"bad key": "hunter2"}'}, secret_keys=["consumerSecretEnv"])
    assert "hunter2" not in str(e.value) and "<secret>" in str(e.value)


def test_yaml_values_typed_from_engine_strings():
    cfg = load(
        minSize="0",
        maxSize="3",
        monitorEnabled="false",
        sshCidrs='["2001:db8::/32", "192.0.2.0/24"]',
        templateImageProperties='{"qw_template": "consumer", "qw_version": 3}',
    )
    assert cfg.min_size == 0 and cfg.monitor_enabled is False
    assert cfg.ssh_cidrs == ("2001:db8::/32", "192.0.2.0/24")
    assert cfg.template_image_properties == {"qw_template": "consumer", "qw_version": "3"}


def test_schema_documents_every_key():
    doc = C.document()
    for s in C.SCHEMA:
        assert s.key in doc and s.description


def test_secret_item_values_never_appear_in_errors():
    with pytest.raises(C.ConfigError) as e:
        C.load({**BASE, "consumerSecretEnv": '{"QW_TOKEN": "hun\\nter2"}'}, secret_keys=["consumerSecretEnv"])
    assert "hun" not in str(e.value) and "no line breaks" in str(e.value)


def test_readme_table_is_the_settings_command_output():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- settings-table:begin (python -m infra settings --markdown) -->\n", 1)[1]
    assert table.split("\n<!-- settings-table:end -->", 1)[0] == C.document(markdown=True)

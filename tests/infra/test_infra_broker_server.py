"""amqpBroker server under Pulumi's mocks: what the program declares for its own broker, the rules
that let the consumers and the monitor (and nobody else) reach it, and where its secrets go.

The certificate and the passwords are the dynamic providers' real create (infra.mocks runs a
``pure`` provider's create); the same files in a real RabbitMQ: test_infra_broker_rabbitmq.py.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

from infra import broker as B
from infra import config as C
from infra import hot
from infra import render as render_mod
from infra.broker_provider import CERT_OUTPUTS, PASSWORD_OUTPUTS, CertificateProvider, rabbit_hash
from infra.mocks import MOCK_NETWORK_ID, MOCK_PORT_IP

SERVER = {
    "queueBackend": "amqp",
    "amqpBroker": "server",
    "monitorEnabled": "true",
    "sshCidrs": '["198.51.100.0/24"]',
    "consumerEnv": '{"QW_REPLY_QUEUE": "orders-replies"}',
}


def server_settings(**over) -> dict:
    """Pulumi.ord.yaml (an existing broker) turned into a broker-server stack."""
    raw, _ = render_mod.stack_settings("ord", **SERVER, **over)
    return {k: v for k, v in raw.items() if k not in C.AMQP_KEYS}


async def _look(stack):
    b = stack.broker
    return {
        "passwords": await b.passwords.passwords.future(),
        "hashes": await b.passwords.hashes.future(),
        "ca": await b.ca_pem.future(),
        "cert": await b.certificate.cert_pem.future(),
        "key": await b.certificate.key_pem.future(),
        # (the provider's own outputs are secret through additional_secret_outputs, which the
        # engine applies and the mocks do not: checked on the registrations instead)
        "secret": {
            "consumer_env": await b.consumer_env.is_secret(),
            "monitor_env": await b.monitor_env.is_secret(),
        },
        "broker_user_data": await b.server.user_data.future(),
        "monitor_user_data": await stack.monitor.server.user_data.future(),
    }


@pytest.fixture(scope="module")
def stack():
    return render_mod.render("ord", cfg_override=server_settings(), inspect=_look)


def of_type(r, suffix):
    return [x for x in r.resources if x.type.endswith(suffix)]


def one(r, suffix, name=None):
    found = [x for x in of_type(r, suffix) if name is None or x.name == name]
    assert len(found) == 1, [x.name for x in found]
    return found[0]


def _cloud_config(text: str) -> dict:
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text.split("\n", 1)[1])


def _files(ud: dict) -> dict[str, dict]:
    return {f["path"]: f for f in ud["write_files"] if not f.get("append")}


# -- config -----------------------------------------------------------------------------------------
BASE = {"cloud": "c", "region": "r", "flavor": "m1.small", "network": "n"}


@pytest.mark.parametrize(
    "over,key,words",
    [
        (
            {"queueBackend": "amqp", "amqpBroker": "server", "amqpUrl": "amqps://u:s3cret@h/"},
            "amqpUrl",
            "empty with amqpBroker 'server'",
        ),
        (
            {"queueBackend": "amqp", "amqpBroker": "server", "amqpConsumerUser": "me"},
            "amqpConsumerUser",
            "the stack makes the broker's URL, its TLS certificate and its users",
        ),
        ({"amqpBroker": "server"}, "amqpBroker", "unless queueBackend is 'amqp'"),
        ({"queueBackend": "amqp", "amqpBroker": "cluster"}, "amqpBroker", "'existing', 'server'"),
        (
            {"queueBackend": "amqp", "amqpBroker": "server", "amqpBrokerImage": "rabbitmq"},
            "amqpBrokerImage",
            "pinned by tag or digest",
        ),
        (
            {"queueBackend": "amqp", "amqpUrl": "amqps://u:s3cret@h/", "amqpBrokerVolumeSize": "50"},
            "amqpBrokerVolumeSize",
            "its default unless amqpBroker is 'server'",
        ),
        (
            {"queueBackend": "amqp", "amqpBroker": "server", "deadLetterTtl": "7200"},
            "deadLetterTtl",
            "ensure",
        ),
    ],
)
def test_broker_choice_errors_name_the_key_and_what_is_allowed(over, key, words):
    with pytest.raises(C.ConfigError) as e:
        C.load({**BASE, **over}, secret_keys=["amqpUrl"])
    assert e.value.key == key and words in str(e.value) and "s3cret" not in str(e.value), str(e.value)


def test_server_defaults_a_pinned_image_and_the_consumers_flavor():
    cfg = C.load({**BASE, "queueBackend": "amqp", "amqpBroker": "server"})
    assert re.fullmatch(r"docker\.io/library/rabbitmq:\d+\.\d+\.\d+-management", cfg.amqp_broker_image)
    assert cfg.amqp_broker_flavor == "m1.small" and cfg.amqp_broker_volume_size == 10


# -- what is declared -------------------------------------------------------------------------------
def test_broker_server_resources_and_no_queue_provider(stack):
    broker = [r for r in stack.resources if r.parent_types[-1:] == ["queue-workers:index:BrokerServer"]]
    kinds = sorted({r.type.rsplit(":", 1)[-1] for r in broker})
    assert kinds == sorted(
        ["SecGroup", "SecGroupRule", "Port", "BrokerCertificate", "BrokerPasswords", "Volume", "Instance"]
    )
    assert not of_type(stack, "QueuePair")  # the broker declares its queues itself, at boot
    port = one(stack, "networking/port:Port")
    assert port.inputs["networkId"] == MOCK_NETWORK_ID and port.inputs["securityGroupIds"] == [
        "broker-group-id"
    ]
    assert ("openstack:networking/getNetwork:getNetwork", {"name": "public", "region": "ORD"}) in [
        (t, {k: a[k] for k in ("name", "region")}) for t, a in stack.calls if "getNetwork" in t
    ]
    vol = one(stack, "blockstorage/volume:Volume")
    assert vol.inputs["size"] == 10
    server = one(stack, "compute/instance:Instance", "broker-server")
    assert server.inputs["networks"] == [{"port": "broker-port-id"}]
    assert server.inputs["flavorName"] == "general1-1" and server.inputs["metadata"]["qw_role"] == "broker"
    assert server.delete_before_replace  # the port and the volume are free before the new one boots
    data = [d for d in server.inputs["blockDevices"] if d["sourceType"] == "volume"]
    assert data == [
        {
            "uuid": "broker-data-id",
            "sourceType": "volume",
            "destinationType": "volume",
            "bootIndex": -1,
            "deleteOnTermination": False,
        }
    ]


def _rules(stack, prefix):
    return [r.inputs for r in of_type(stack, "SecGroupRule") if r.name.startswith(prefix)]


def test_amqps_only_from_the_consumers_and_monitor_groups_management_only_from_the_monitor(stack):
    ingress = {
        (r["portRangeMin"], r.get("remoteGroupId") or r.get("remoteIpPrefix"), r["ethertype"])
        for r in _rules(stack, "broker-")
        if r["direction"] == "ingress"
    }
    consumers, monitor = "network-consumers-id", "network-monitor-id"
    expected = {
        (port, group, eth)
        for eth in ("IPv4", "IPv6")
        for port, group in ((5671, consumers), (5671, monitor), (15671, monitor))
    }
    assert ingress == expected | {(22, "198.51.100.0/24", "IPv4")}
    for r in _rules(stack, "broker-"):
        assert r["securityGroupId"] == "broker-group-id"
    # the monitor has a group of its own (its rules: egress and SSH, like the consumers')
    monitor_server = one(stack, "compute/instance:Instance", "monitor-server")
    groups = {g.name: g.inputs["name"] for g in of_type(stack, "SecGroup")}
    assert monitor_server.inputs["securityGroups"] == [groups["network-monitor"]]
    assert groups["network-monitor"] != groups["network-consumers"]
    assert {r["direction"] for r in _rules(stack, "network-monitor-")} == {"egress", "ingress"}
    heat = one(stack, "StackV1")
    assert heat.inputs["parameters"][hot.P_SECURITY_GROUP] == consumers


def test_certificate_names_the_port_address_and_chains_to_the_ca(stack):
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(stack.inspected["cert"].encode())
    ca = x509.load_pem_x509_certificate(stack.inspected["ca"].encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == [MOCK_PORT_IP]
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_ca_key_is_never_kept():
    props = {"common_name": "b", "ip_addresses": ["10.0.0.1"], "dns_names": [], "days": 1}
    outs = CertificateProvider().create(props).outs
    assert set(outs) - set(props) == set(CERT_OUTPUTS)
    assert outs["key_pem"].count("PRIVATE KEY-----") == 2  # one key: the server's


# -- secrets ------------------------------------------------------------------------------------
def test_keys_passwords_and_user_data_are_secret(stack):
    assert all(stack.inspected["secret"].values()), stack.inspected["secret"]
    assert set(one(stack, "BrokerCertificate").secret_outputs) >= set(CERT_OUTPUTS)
    assert set(one(stack, "BrokerPasswords").secret_outputs) >= set(PASSWORD_OUTPUTS)
    assert "userData" in one(stack, "compute/instance:Instance", "broker-server").secret_inputs
    assert "userData" in one(stack, "compute/instance:Instance", "monitor-server").secret_inputs


def _drop(value, path: str):
    """``value`` without the part at dotted ``path`` (a secret input)."""
    head, _, rest = path.partition(".")
    m = re.fullmatch(r"([^\[]*)((?:\[\d+\])*)", head)
    key, idx = m.group(1), [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    if not rest and not idx:
        value.pop(key, None)
        return
    inner = value[key]
    for i in idx[:-1]:
        inner = inner[i]
    if idx and not rest:
        inner[idx[-1]] = None
    else:
        _drop(inner[idx[-1]] if idx else inner, rest)


def test_no_secret_in_plain_state(stack):
    seen = stack.inspected
    secrets = [*seen["passwords"].values(), *seen["hashes"].values()]
    secrets.append(seen["key"].split("-----")[2].strip()[:40])  # the key's body
    for r in stack.resources:
        plain = json.loads(json.dumps(r.inputs))
        for path in r.secret_inputs:
            _drop(plain, path)
        plain.pop("__provider", None)  # the pickled provider class (no values in it)
        text = json.dumps(plain)
        leaked = [s[:6] for s in secrets if s in text]
        assert not leaked, (r.type, r.name, leaked)
    assert not any(s in stack.template_text for s in secrets)


# -- what each role gets ------------------------------------------------------------------------
def _env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def _check_url(url: str, user: str, password: str, ca_pem: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname, parts.port) == ("amqps", MOCK_PORT_IP, 5671)
    assert (unquote(parts.username), unquote(parts.password)) == (user, password)
    der = base64.b64decode(parse_qs(parts.query)["cadata"][0])
    assert der == x509.load_pem_x509_certificate(ca_pem.encode()).public_bytes(Encoding.DER)


def test_consumers_get_an_amqps_url_with_their_user_and_the_ca(stack):
    seen = stack.inspected
    heat = one(stack, "StackV1")
    secret = _env(base64.b64decode(heat.inputs["parameters"][hot.P_CREDENTIALS_ENV]).decode())
    _check_url(secret["QW_AMQP_URL"], B.CONSUMER_USER, seen["passwords"][B.CONSUMER_USER], seen["ca"])
    assert "QW_AMQP_USER" not in secret and "QW_AMQP_MANAGEMENT_URL" not in secret
    assert any(p.startswith("parameters") for p in heat.secret_inputs)
    # the rendered template shows the choice, not the broker's secrets
    assert "amqpBroker server" in stack.template_text and "QW_QUEUE_BACKEND=amqp" in stack.template_text
    assert "cadata" not in stack.template_text


def test_monitor_gets_its_user_and_the_management_api_over_https(stack):
    seen = stack.inspected
    ud = _cloud_config(seen["monitor_user_data"])
    plain = ud["write_files"][0]["content"]
    assert "amqpBroker server" in plain
    assert _env(plain)["QW_QUEUE_BACKEND"] == "amqp" and "QW_AMQP_URL" not in _env(plain)
    secret = _env(base64.b64decode(ud["write_files"][1]["content"]).decode())
    _check_url(secret["QW_AMQP_URL"], B.MONITOR_USER, seen["passwords"][B.MONITOR_USER], seen["ca"])
    assert secret["QW_AMQP_MANAGEMENT_URL"] == f"https://{MOCK_PORT_IP}:15671"


def test_broker_user_data_boots_rabbitmq_with_hashed_users_and_the_pair(stack):
    seen = stack.inspected
    ud = _cloud_config(seen["broker_user_data"])
    files = _files(ud)
    conf = files[f"{B.BROKER_DIR}/conf.d/queue-workers.conf"]["content"]
    assert "listeners.ssl.1 = 0.0.0.0:5671" in conf and "listeners.tcp.1 = 127.0.0.1:5672" in conf
    assert "management.ssl.port = 15671" in conf and "management.tcp.ip = 127.0.0.1" in conf
    defs = json.loads(files[f"{B.BROKER_DIR}/definitions.json"]["content"])
    users = {u["name"]: u for u in defs["users"]}
    assert set(users) == set(B.USERS)
    for name, u in users.items():
        salt = base64.b64decode(u["password_hash"])[:4]
        assert rabbit_hash(seen["passwords"][name], salt) == u["password_hash"]
        # only the stack user's, in the env file of the server's own ensure
        holders = [p for p, f in files.items() if seen["passwords"][name] in f["content"]]
        assert holders == ([B.QUEUES_ENV_FILE] if name == B.STACK_USER else []), (name, holders)
    rights = {p["user"]: p for p in defs["permissions"]}
    assert rights[B.CONSUMER_USER]["read"] == "^orders$" and rights[B.MONITOR_USER]["read"] == "^$"
    assert "orders\\-replies\\-in" in rights[B.CONSUMER_USER]["write"]
    assert users[B.MONITOR_USER]["tags"] == ["monitoring"] and users[B.CONSUMER_USER]["tags"] == []
    for path in (f"{B.BROKER_DIR}/tls/server.key", f"{B.BROKER_DIR}/definitions.json", B.QUEUES_ENV_FILE):
        assert files[path]["permissions"] == "0600"
    assert files[f"{B.BROKER_DIR}/tls/server.key"]["content"] == seen["key"]
    unit = files[f"/etc/systemd/system/{B.BROKER_UNIT}"]["content"]
    assert "docker.io/library/rabbitmq:3.13.7-management" in unit and "--network host" in unit
    queues = files[f"/etc/systemd/system/{B.QUEUES_UNIT}"]["content"]
    assert "QW_QUEUE=orders " in queues and "QW_QUEUE=orders-replies " in queues
    assert _env(files[B.QUEUES_ENV_FILE]["content"])["QW_MAX_CLAIMS"] == "4"
    (fs,) = ud["fs_setup"]
    assert fs["device"] == "/dev/disk/by-id/virtio-" + "broker-data-id"[:20] and fs["overwrite"] is False
    assert ud["mounts"][0][1] == B.DATA_DIR


def test_an_existing_broker_stays_as_it_was():
    raw, secrets = render_mod.stack_settings("ord")
    got = render_mod.render("ord", cfg_override=raw, secret_keys=secrets)
    assert not [x for x in got.resources if x.type.endswith("BrokerServer")]
    assert len(of_type(got, "QueuePair")) == 1 and len(of_type(got, "networking/secGroup:SecGroup")) == 1
    assert "amqpBroker existing" in got.template_text


def test_heat_accepts_the_consumers_template_of_a_broker_server_stack(stack, tmp_path):
    from test_infra_heat import run_validator

    paths = [tmp_path / "server.yaml", tmp_path / "server-member.yaml"]
    paths[0].write_text(hot.dump(stack.template))
    paths[1].write_text(hot.dump(hot.member_template(stack.template)))
    verdicts = run_validator(paths)
    assert all(v["ok"] for v in verdicts.values()), verdicts


# -- amqpBrokerVolumeSize 0: a cloud without block storage -------------------------------------------
@pytest.fixture(scope="module")
def no_volume():
    return render_mod.render("ord", cfg_override=server_settings(amqpBrokerVolumeSize="0"), inspect=_look)


def test_volume_size_zero_declares_no_volume_and_boots_from_the_image(no_volume):
    assert not of_type(no_volume, "blockstorage/volume:Volume")
    server = one(no_volume, "compute/instance:Instance", "broker-server")
    assert not server.inputs.get("blockDevices")
    assert server.inputs["imageId"] and server.inputs["networks"] == [{"port": "broker-port-id"}]


def test_volume_size_zero_keeps_the_data_on_the_root_disk(no_volume):
    ud = _cloud_config(no_volume.inspected["broker_user_data"])
    assert "fs_setup" not in ud and "mounts" not in ud
    unit = _files(ud)[f"/etc/systemd/system/{B.BROKER_UNIT}"]["content"]
    assert "RequiresMountsFor" not in unit and f"mkdir -p {B.DATA_DIR}" in unit
    assert f"--volume {B.DATA_DIR}:/var/lib/rabbitmq" in unit


def test_volume_size_zero_is_allowed_only_with_the_broker_server_and_says_the_data_is_lost():
    cfg = C.load({**BASE, "queueBackend": "amqp", "amqpBroker": "server", "amqpBrokerVolumeSize": "0"})
    assert cfg.amqp_broker_volume_size == 0
    with pytest.raises(C.ConfigError) as e:
        C.load({**BASE, "amqpBrokerVolumeSize": "0"})
    assert e.value.key == "amqpBrokerVolumeSize" and "unless amqpBroker is 'server'" in str(e.value)
    with pytest.raises(C.ConfigError, match="from 0 to 16384"):
        C.load({**BASE, "queueBackend": "amqp", "amqpBroker": "server", "amqpBrokerVolumeSize": "-1"})
    help_text = C.SETTINGS["amqpBrokerVolumeSize"].description
    assert "0: no volume" in help_text and "LOST when the server is replaced" in help_text

"""The broker server's RabbitMQ setup (infra.broker) in a real RabbitMQ, without a cloud.

What the stack writes onto the broker server (its rabbitmq.conf, the definitions file with the
salted hashes, the certificate its dynamic provider makes) is loaded into a local RabbitMQ
(devenv.rabbitmq, Debian's 3.10) on loopback ports; the queue pair is declared the way the
server's own unit does it (`python -m workload ensure` as the stack user, over the plain loopback
listener); then each role connects with the URL the stack hands it (amqps://, the CA in it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from devenv.procs import LOOPBACK
from infra import broker as B
from infra import config as C
from infra.broker_provider import CertificateProvider, PasswordsProvider
from workload.queues import open_queue
from workload.queues.base import QueueError
from workload.queues.retry import RetryPolicy

BASE = {
    "cloud": "c",
    "region": "r",
    "flavor": "f",
    "network": "n",
    "queueBackend": "amqp",
    "amqpBroker": "server",
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    from devenv.rabbitmq import INSTALL_HINT, LocalRabbitMQ, installed

    if not installed():
        pytest.fail(f"RabbitMQ is not installed: {INSTALL_HINT} (make test does it)")
    name = f"qwb-{uuid.uuid4().hex[:8]}"
    cfg = C.load(
        {**BASE, "queueName": name, "maxClaims": "3", "consumerEnv": {"QW_REPLY_QUEUE": name + "-re"}}
    )
    # what the stack's dynamic providers make, by their own create (as the engine runs it)
    tls = (
        CertificateProvider()
        .create({"common_name": name, "ip_addresses": [LOOPBACK], "dns_names": [], "days": 2})
        .outs
    )
    users = PasswordsProvider().create({"users": list(B.USERS)}).outs
    folder = tmp_path_factory.mktemp("broker-files")
    paths = {k: str(folder / f) for k, f in (("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"))}
    paths["definitions"] = str(folder / "definitions.json")
    for key, out in (("ca", "ca_pem"), ("cert", "cert_pem"), ("key", "key_pem")):
        (folder / os.path.basename(paths[key])).write_text(tls[out])
    (folder / "definitions.json").write_text(B.definitions(cfg, users["hashes"]))

    def listen(r) -> B.Listen:
        return B.Listen(LOOPBACK, LOOPBACK, r.tls_port, r.management_tls_port, r.amqp_port, r.port)

    with LocalRabbitMQ(config=lambda r: B.rabbitmq_conf(cfg, paths, listen(r))) as rabbit:
        yield {"cfg": cfg, "tls": tls, "passwords": users["passwords"], "listen": listen(rabbit)}


def _open(broker, name: str, env: dict[str, str]):
    return open_queue(
        "amqp",
        name,
        url=env["QW_AMQP_URL"],
        management_url=env.get("QW_AMQP_MANAGEMENT_URL"),
        retry_policy=RetryPolicy(attempts=1),
        timeout=15,
    )


def _role(broker, role: str, name: str | None = None, ca_pem: str | None = None):
    env = B.role_env(role, LOOPBACK, broker["passwords"], ca_pem or broker["tls"]["ca_pem"], broker["listen"])
    return _open(broker, name or broker["cfg"].queue_name, env)


def _refused(call) -> bool:
    try:
        call()
    except QueueError as exc:
        return exc.title == "ACCESS_REFUSED"
    return False


@pytest.fixture(scope="module")
def queues(broker):
    """The queue pair and the reply queue, declared as the broker server's unit does."""
    cfg = broker["cfg"]
    env = {**os.environ, **B.queues_env(cfg, broker["passwords"][B.STACK_USER], broker["listen"])}
    for queue in (cfg.queue_name, *B.reply_queues(cfg)):
        done = subprocess.run(
            [sys.executable, "-m", "workload", "ensure"],
            env={**env, "QW_QUEUE": queue},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    return cfg


def test_tls_verifies_against_the_stack_ca_and_refuses_another(broker, queues):
    q = _role(broker, "consumer")
    try:
        assert q.claim(1) is None  # a TLS session to the broker, verified; the queue is empty
        assert q.address.scheme == "amqps" and q.address.port == broker["listen"].amqps
    finally:
        q.close()
    other = (
        CertificateProvider()
        .create({"common_name": "x", "ip_addresses": [LOOPBACK], "dns_names": [], "days": 1})
        .outs
    )
    stranger = _role(broker, "consumer", ca_pem=other["ca_pem"])
    try:
        with pytest.raises(QueueError) as e:
            stranger.claim(1)
        assert e.value.title == "TLS failed" and "CERTIFICATE_VERIFY_FAILED" in str(e.value), str(e.value)
    finally:
        stranger.close()


def test_the_queue_pair_has_the_stack_policy(broker, queues):
    q = _role(broker, "monitor")
    try:
        st = q.stats()
        assert st.free == 0 and st.total == 0
        assert q.dead_letter_queue().stats().total == 0
    finally:
        q.close()


def test_consumer_consumes_acks_and_replies_but_nothing_else(broker, queues):
    cfg, admin_env = queues, B.queues_env(queues, broker["passwords"][B.STACK_USER], broker["listen"])
    producer = _open(broker, cfg.queue_name, admin_env)  # the stack user may post: it owns the pair
    producer.post([{"n": 1}, {"n": 2}, {"n": 3}])
    q = _role(broker, "consumer")
    reply = _role(broker, "consumer", B.reply_queues(cfg)[0])
    try:
        claim = q.claim(3)
        assert claim and len(claim.messages) == 3
        q.delete(claim.messages[0])  # ack
        q.dead_letter(claim.messages[1], claim, "given up")  # its own backstop
        q.release(claim, claim.messages[2:])
        reply.post([{"reply": 1}])
        assert refused_all(q, reply)
    finally:
        q.close()
        reply.close()
    assert producer.stats().free == 1
    producer.close()


def refused_all(q, reply) -> bool:
    """What the consumer's user may not do: configure, post to its own or any other queue, read
    (claim, purge) anything but its queue."""
    checks = {
        "ensure": _refused(q.ensure),
        "drop": _refused(q.drop),
        "post to its queue": _refused(lambda: q.post([{"n": 4}])),
        # (its own dead-letter exchange it may write: the dead-lettering backstop)
        "post to the replies' dead letters": _refused(lambda: reply.dead_letter_queue().post([{"n": 5}])),
        "claim dead letters": _refused(lambda: q.dead_letter_queue().claim(1)),
        "purge dead letters": _refused(q.dead_letter_queue().purge),
        "claim replies": _refused(lambda: reply.claim(1)),
        "purge replies": _refused(reply.purge),
    }
    assert all(checks.values()), {k: v for k, v in checks.items() if not v}
    return True


def test_monitor_reads_stats_over_https_but_cannot_consume_or_publish(broker, queues):
    q = _role(broker, "monitor")
    try:
        assert q.address.management_url == f"https://{LOOPBACK}:{broker['listen'].management}"
        assert q.stats().total >= 0  # the management API over TLS, verified against the stack's CA
        assert _refused(lambda: q.claim(1)) and _refused(lambda: q.post([{"n": 1}]))
        assert _refused(q.purge) and _refused(q.ensure) and _refused(q.drop)
    finally:
        q.close()


def test_management_https_is_verified_and_read_only_for_the_monitor(broker, queues):
    import requests

    from workload.queues.amqp_address import parse_url, tls_verify

    env = B.role_env("monitor", LOOPBACK, broker["passwords"], broker["tls"]["ca_pem"], broker["listen"])
    address = parse_url(env["QW_AMQP_URL"], env["QW_AMQP_MANAGEMENT_URL"], environ={})
    auth = (address.user, address.password)
    api = address.management_url + "/api"
    assert requests.get(f"{api}/queues", auth=auth, verify=tls_verify(address), timeout=10).status_code == 200
    policy = {"pattern": ".*", "definition": {"message-ttl": 1}, "apply-to": "queues"}
    put = requests.put(
        f"{api}/policies/%2F/qw.evil", json=policy, auth=auth, verify=tls_verify(address), timeout=10
    )
    assert put.status_code == 401  # monitoring is no policymaker
    other = CertificateProvider().create(
        {"common_name": "x", "ip_addresses": [LOOPBACK], "dns_names": [], "days": 1}
    )
    stranger = parse_url(
        B.role_env("monitor", LOOPBACK, broker["passwords"], other.outs["ca_pem"], broker["listen"])[
            "QW_AMQP_URL"
        ],
        env["QW_AMQP_MANAGEMENT_URL"],
        environ={},
    )
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{api}/overview", auth=auth, verify=tls_verify(stranger), timeout=10)


def test_only_the_stack_users_log_in(broker, queues):
    env = B.role_env(
        "consumer", LOOPBACK, {B.CONSUMER_USER: "not-the-password"}, broker["tls"]["ca_pem"], broker["listen"]
    )
    q = _open(broker, queues.queue_name, env)
    guest = B.role_env(
        "consumer", LOOPBACK, {B.CONSUMER_USER: "guest"}, broker["tls"]["ca_pem"], broker["listen"]
    )
    guest["QW_AMQP_URL"] = guest["QW_AMQP_URL"].replace(B.CONSUMER_USER, "guest", 1)
    g = _open(broker, queues.queue_name, guest)
    try:
        assert _refused(lambda: q.claim(1))
        assert _refused(lambda: g.claim(1))  # no guest user on the broker at all
    finally:
        q.close()
        g.close()

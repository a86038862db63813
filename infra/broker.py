"""The broker server of ``amqpBroker: server``: its RabbitMQ config, users, units and user data. Pure.

One server from the template image runs RabbitMQ in its container (``amqpBrokerImage``) under a
systemd unit cloud-init writes, with ``--network host`` so that what the config says it listens on
is what the server listens on:

* AMQP over TLS on :data:`AMQPS_PORT` and the management API over HTTPS on
  :data:`MANAGEMENT_PORT`, on every interface (the security group lets in only the consumers'
  and the monitor's groups); plain AMQP and HTTP on 127.0.0.1 only, for the server's own
  ``ensure`` unit; the Erlang distribution and epmd on 127.0.0.1 only.
* users from a definitions file loaded at boot, passwords as salted hashes
  (:mod:`infra.broker_provider`), with the rights of :mod:`infra.amqp_permissions`: the stack's
  user (declares the queue pair: the server's own ``ensure`` unit runs the workload image's
  ``ensure`` over loopback, the same driver code as every other backend), the consumers' and the
  monitor's. No administrator and no ``guest``: nobody can log in but these three.
* its data (mnesia, the quorum queues' logs) on its own Cinder volume, mounted at
  :data:`DATA_DIR` (see :mod:`infra.components.broker` for why a volume); with
  ``amqpBrokerVolumeSize: 0`` (a cloud without block storage) :data:`DATA_DIR` is a folder of the
  root disk, and the data goes with the server.

:func:`rabbitmq_conf` and :func:`definitions` are what the real-RabbitMQ test loads into a local
broker (tests/infra/test_infra_broker_rabbitmq.py); the paths and ports are parameters for it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping
from urllib.parse import quote

from infra import amqp_permissions as perms
from infra import hot
from infra.config import StackConfig, program_env

AMQPS_PORT, MANAGEMENT_PORT = 5671, 15671  # what the security group opens
LOCAL_AMQP_PORT, LOCAL_MANAGEMENT_PORT = 5672, 15672  # 127.0.0.1 only
STACK_USER, CONSUMER_USER, MONITOR_USER = "qw-stack", "qw-consumer", "qw-monitor"
USERS = (STACK_USER, CONSUMER_USER, MONITOR_USER)
VHOST = "/"
CONTAINER_UID = 999  # the official image's rabbitmq user

BROKER_DIR = f"{hot.SETTINGS_DIR}/broker"  # conf.d/, definitions.json, tls/ (mounted read-only)
DATA_DIR = "/var/lib/queue-workers/broker"  # the volume
DATA_LABEL = "qw-broker"  # the volume's filesystem label
BROKER_UNIT = "queue-workers-broker.service"
QUEUES_UNIT = "queue-workers-broker-queues.service"
QUEUES_ENV_FILE = f"{BROKER_DIR}/queues.env"
# Where the container sees them (the official image reads /etc/rabbitmq/conf.d/*.conf).
IN_CONTAINER = {
    "ca": "/etc/rabbitmq/tls/ca.pem",
    "cert": "/etc/rabbitmq/tls/server.pem",
    "key": "/etc/rabbitmq/tls/server.key",
    "definitions": "/etc/rabbitmq/definitions.json",
}


@dataclasses.dataclass(frozen=True)
class Listen:
    """Where the broker listens: ``public`` for AMQPS and HTTPS, ``local`` for the plain ones."""

    public: str = "0.0.0.0"
    local: str = "127.0.0.1"
    amqps: int = AMQPS_PORT
    management: int = MANAGEMENT_PORT
    local_amqp: int = LOCAL_AMQP_PORT
    local_management: int = LOCAL_MANAGEMENT_PORT


def consumer_timeout(cfg: StackConfig) -> int:
    """Seconds a delivery may stay unacknowledged before the broker closes the channel: above the
    longest handler (RabbitMQ's default 30 min, or the handler timeout and the claim's time)."""
    return max(1800, cfg.claim_ttl + cfg.claim_grace, (cfg.handler_timeout or 0) + 60)


def rabbitmq_conf(
    cfg: StackConfig, paths: Mapping[str, str] = IN_CONTAINER, listen: Listen = Listen()
) -> str:
    """rabbitmq.conf of the broker server (``paths``: ca, cert, key, definitions)."""
    tls = [f"cacertfile = {paths['ca']}", f"certfile = {paths['cert']}", f"keyfile = {paths['key']}"]
    lines = [
        "# queue-workers broker server (amqpBroker: server), written by the stack",
        f"listeners.tcp.1 = {listen.local}:{listen.local_amqp}",
        f"listeners.ssl.1 = {listen.public}:{listen.amqps}",
        *(f"ssl_options.{t}" for t in tls),
        "ssl_options.versions.1 = tlsv1.3",
        "ssl_options.versions.2 = tlsv1.2",
        # clients prove who they are by password; the server proves it by its certificate
        "ssl_options.verify = verify_none",
        "ssl_options.fail_if_no_peer_cert = false",
        f"management.tcp.ip = {listen.local}",
        f"management.tcp.port = {listen.local_management}",
        f"management.ssl.ip = {listen.public}",
        f"management.ssl.port = {listen.management}",
        *(f"management.ssl.{t}" for t in tls),
        "management.ssl.versions.1 = tlsv1.3",
        "management.ssl.versions.2 = tlsv1.2",
        # the monitor's unacknowledged counts come from the management agent's metrics
        "management_agent.disable_metrics_collector = false",
        f"load_definitions = {paths['definitions']}",
        "loopback_users.guest = true",
        f"consumer_timeout = {consumer_timeout(cfg) * 1000}",
        "log.console = true",
        "log.console.level = info",
        "",
    ]
    return "\n".join(lines)


def reply_queues(cfg: StackConfig) -> tuple[str, ...]:
    """The queue the consumers post replies to (consumerEnv's QW_REPLY_QUEUE), if any."""
    reply = cfg.consumer_env.get("QW_REPLY_QUEUE")
    return (reply,) if reply else ()


def grants(cfg: StackConfig) -> dict[str, dict[str, str]]:
    """Each broker user's permissions and tags (infra.amqp_permissions)."""
    suffix = cfg.queue_policy.dead_letter_suffix
    pairs = [(q, q + suffix) for q in reply_queues(cfg)]
    return {
        STACK_USER: perms.stack_user(cfg.queue_name, cfg.dead_letter_queue, tuple(pairs)),
        CONSUMER_USER: perms.consumer(cfg.queue_name, reply_queues(cfg)),
        MONITOR_USER: perms.monitor(),
    }


def definitions(cfg: StackConfig, hashes: Mapping[str, str]) -> str:
    """The definitions file loaded at boot: the vhost, each user (salted hash) and its rights."""
    users, permissions = [], []
    for user, grant in grants(cfg).items():
        tags = [t for t in grant["tags"].split(",") if t]
        users.append(
            {
                "name": user,
                "password_hash": hashes[user],
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": tags,
            }
        )
        permissions.append(
            {"user": user, "vhost": VHOST, **{k: grant[k] for k in ("configure", "write", "read")}}
        )
    doc = {"vhosts": [{"name": VHOST}], "users": users, "permissions": permissions}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def ca_data(ca_pem: str) -> str:
    """The CA as the driver's URL carries it (``?cadata=``: base64 of its DER form, aiormq's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(ca_pem.encode()).public_bytes(Encoding.DER)
    return base64.b64encode(der).decode()


def amqps_url(user: str, password: str, host: str, ca_pem: str, port: int = AMQPS_PORT) -> str:
    """``amqps://USER:PASSWORD@HOST:PORT/%2F?cadata=...``: TLS verified against the broker's CA, which
    travels in the URL (no file to mount into the containers)."""
    cadata = quote(ca_data(ca_pem), safe="")
    return (
        f"amqps://{quote(user, safe='')}:{quote(password, safe='')}@{_host(host)}:{port}/%2F?cadata={cadata}"
    )


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # an IPv6 address in a URL


def role_env(
    role: str, host: str, passwords: Mapping[str, str], ca_pem: str, listen: Listen = Listen()
) -> dict[str, str]:
    """The secret part of ``role``'s env file (``consumer`` or ``monitor``) on a broker server stack."""
    user = {"consumer": CONSUMER_USER, "monitor": MONITOR_USER}[role]
    env = {"QW_AMQP_URL": amqps_url(user, passwords[user], host, ca_pem, listen.amqps)}
    if role == "monitor":
        env["QW_AMQP_MANAGEMENT_URL"] = f"https://{_host(host)}:{listen.management}"
    return env


def queues_env(cfg: StackConfig, password: str, listen: Listen = Listen()) -> dict[str, str]:
    """The env file of the server's own ``ensure``: the stack user over loopback, the queue policy."""
    return {
        "QW_QUEUE_BACKEND": "amqp",
        "QW_AMQP_URL": f"amqp://{STACK_USER}:{quote(password, safe='')}@{listen.local}:{listen.local_amqp}/%2F",
        "QW_AMQP_MANAGEMENT_URL": f"http://{listen.local}:{listen.local_management}",
        **program_env(cfg, "queue"),  # the queue policy as `ensure` reads it
    }


def broker_unit(image: str, on_volume: bool = True) -> str:
    """The systemd unit running RabbitMQ's container (``on_volume``: :data:`DATA_DIR` is the
    volume's mount, which the unit waits for; else a folder of the root disk)."""
    erl = "-kernel inet_dist_use_interface {127,0,0,1}"
    mounts = " ".join(
        f"--volume {src}:{dst}:ro"
        for src, dst in (
            (f"{BROKER_DIR}/conf.d", "/etc/rabbitmq/conf.d"),  # ours only: not the image's defaults
            (f"{BROKER_DIR}/definitions.json", IN_CONTAINER["definitions"]),
            (f"{BROKER_DIR}/tls", "/etc/rabbitmq/tls"),
        )
    )
    return f"""[Unit]
Description=queue-workers broker (RabbitMQ container {image})
Requires=docker.service
After=docker.service network-online.target cloud-init.service
Wants=network-online.target
{f"RequiresMountsFor={DATA_DIR}" if on_volume else f"# no volume (amqpBrokerVolumeSize 0): {DATA_DIR} is on the root disk"}
ConditionPathExists={BROKER_DIR}/conf.d/queue-workers.conf

[Service]
Type=simple
ExecStartPre=-/usr/bin/docker rm -f queue-workers-broker
ExecStartPre=/bin/mkdir -p {DATA_DIR}
# The image runs RabbitMQ as its user rabbitmq (uid {CONTAINER_UID}): it must read its key and own its data.
ExecStartPre=/bin/chown -R {CONTAINER_UID}:{CONTAINER_UID} {DATA_DIR} {BROKER_DIR}/tls {BROKER_DIR}/definitions.json {BROKER_DIR}/conf.d
ExecStart=/usr/bin/docker run --rm --name queue-workers-broker --network host \\
    --env RABBITMQ_NODENAME=rabbit@localhost --env ERL_EPMD_ADDRESS=127.0.0.1 \\
    --env "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS={erl}" \\
    --volume {DATA_DIR}:/var/lib/rabbitmq {mounts} {image}
ExecStop=/usr/bin/docker stop --time 60 queue-workers-broker
TimeoutStopSec=90
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


def queues_unit(cfg: StackConfig) -> str:
    """A oneshot unit: ``ensure`` of the queue pair (and the reply queue's) once the broker answers,
    with the workload image the bake put on the template (the same driver as on every backend)."""
    starts = "\n".join(
        f"ExecStart=/usr/bin/docker run --rm --network host --env-file {QUEUES_ENV_FILE} "
        f"--env QW_QUEUE={q} ${{QW_WORKLOAD_IMAGE}} ensure"
        for q in (cfg.queue_name, *reply_queues(cfg))
    )
    return f"""[Unit]
Description=queue-workers broker: declare the queue pair {cfg.queue_name} (quorum queues, dead-letter pair, policy)
Requires={BROKER_UNIT}
After={BROKER_UNIT}

[Service]
Type=oneshot
RemainAfterExit=yes
EnvironmentFile={hot.SETTINGS_DIR}/image.env
{starts}
# until the broker answers (its first boot imports the definitions)
Restart=on-failure
RestartSec=10

[Install]
WantedBy=multi-user.target
"""


def _file(path: str, content: str, mode: str = "0600") -> dict:
    return {"path": path, "permissions": mode, "owner": "root:root", "content": content}


def user_data(
    cfg: StackConfig,
    volume_id: str | None,
    tls: Mapping[str, str],
    hashes: Mapping[str, str],
    stack_password: str,
) -> str:
    """cloud-init user data of the broker server (a secret: it holds the key and the stack user's
    password): format and mount the volume once (``volume_id`` None: no volume, the data on the
    root disk), write the config, start the units."""
    files = [
        _file(f"{BROKER_DIR}/conf.d/queue-workers.conf", rabbitmq_conf(cfg)),
        _file(f"{BROKER_DIR}/definitions.json", definitions(cfg, hashes)),
        _file(f"{BROKER_DIR}/tls/ca.pem", tls["ca_pem"], "0644"),
        _file(f"{BROKER_DIR}/tls/server.pem", tls["cert_pem"], "0644"),
        _file(f"{BROKER_DIR}/tls/server.key", tls["key_pem"]),
        _file(QUEUES_ENV_FILE, hot.env_file(queues_env(cfg, stack_password))),
        _file(
            f"/etc/systemd/system/{BROKER_UNIT}",
            broker_unit(cfg.amqp_broker_image, on_volume=volume_id is not None),
            "0644",
        ),
        _file(f"/etc/systemd/system/{QUEUES_UNIT}", queues_unit(cfg), "0644"),
    ]
    doc: dict = {}
    if volume_id is not None:
        device = f"/dev/disk/by-id/virtio-{volume_id[:20]}"  # Nova's serial of a Cinder volume: its id
        doc["fs_setup"] = [{"label": DATA_LABEL, "filesystem": "ext4", "device": device, "overwrite": False}]
        doc["mounts"] = [[f"LABEL={DATA_LABEL}", DATA_DIR, "ext4", "defaults,nofail", "0", "2"]]
    doc |= {
        "write_files": files,
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", BROKER_UNIT, QUEUES_UNIT],
            ["systemctl", "start", "--no-block", BROKER_UNIT, QUEUES_UNIT],
        ],
    }
    return hot.user_data(doc)


def server_name(cfg: StackConfig, stack: str) -> str:
    return f"{cfg.server_name}-broker-{stack}"

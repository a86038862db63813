"""A local RabbitMQ: Debian's ``rabbitmq-server`` (3.10) as a node of our own on 127.0.0.1, for the
AMQP backend's tests and demo, and as the message bus of the local OpenStack services.

Everything it listens on is loopback only: AMQP (``listeners.tcp``), the management HTTP API
(``management.tcp.ip``), the Erlang distribution port (``-kernel inet_dist_use_interface``) and its
own ``epmd`` (``-address 127.0.0.1`` on a port of its own, so a system epmd is never used or
started). Its node name, mnesia, log and config folder are its own (a temporary folder unless
``data_dir`` is given), and the broker and its epmd are started and stopped by PID::

    with LocalRabbitMQ() as rabbit:
        rabbit.amqp_url          # amqp://qw:<password>@127.0.0.1:PORT/%2F (the workload's user)
        rabbit.amqps_url         # the same over TLS, ?cafile= the broker's own CA
        rabbit.management_url    # http://127.0.0.1:PORT (the HTTP API; admin credentials in .admin)
        rabbit.add_user("nova", "secret", vhost="openstack")
        rabbit.env()             # QW_QUEUE_BACKEND=amqp, QW_AMQP_URL=...

The package is installed by ``devenv/builder/install-deps.sh`` (``make builder-deps``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from urllib.parse import quote

import requests

from devenv.loopback import LoopbackService
from devenv.procs import LOOPBACK, free_port, stop_process, wait_until

RABBITMQ_HOME = "/usr/lib/rabbitmq"
SERVER = os.path.join(RABBITMQ_HOME, "bin", "rabbitmq-server")
EPMD_CANDIDATES = ("/usr/bin/epmd", "/usr/lib/erlang/bin/epmd")
INSTALL_HINT = "install Debian's rabbitmq-server (make builder-deps, or apt-get install rabbitmq-server)"
WORKLOAD_USER = "qw"
ADMIN_USER = "qw-admin"


def _epmd() -> str:
    for path in (shutil.which("epmd"), *EPMD_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    raise RuntimeError(f"epmd not found: {INSTALL_HINT}")


def installed() -> bool:
    """True when Debian's rabbitmq-server and epmd are here."""
    try:
        _epmd()
    except RuntimeError:
        return False
    return os.access(SERVER, os.X_OK)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def make_certificates(folder: str) -> tuple[str, str, str]:
    """A CA and a server certificate for 127.0.0.1 signed by it (EC P-256, 30 days), written to
    ``folder``; returns the paths (ca, certificate, key). Made per broker: nothing is shared."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject, issuer, key, sign_key, ca: bool):
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        return b.sign(sign_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "queue-workers local RabbitMQ CA")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, True)
    server = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)]), ca_name, key, ca_key, False)
    paths = tuple(os.path.join(folder, n) for n in ("ca.pem", "server.pem", "server.key"))
    for path, data in zip(
        paths,
        (
            ca.public_bytes(serialization.Encoding.PEM),
            server.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ),
        ),
    ):
        with open(path, "wb") as f:
            f.write(data)
    os.chmod(paths[2], 0o600)
    return paths


# How often this broker refreshes its management figures and quorum queue counts (RabbitMQ's
# default is 5 s; fresher here for the monitor and the tests).
STATS_INTERVAL_S = 1.0


class LocalRabbitMQ(LoopbackService):
    """One RabbitMQ node on loopback ports. ``.url`` is the management API's base URL.

    :param data_dir: folder for mnesia, logs and config (default: a temporary one, removed on stop).
    :param consumer_timeout: seconds the broker lets a delivery stay unacknowledged before it
        closes the channel (RabbitMQ's ``consumer_timeout``; its default is 30 min).
    :param heartbeat: the heartbeat interval (s) the broker proposes; clients may ask for less.
    :param tls: also listen for ``amqps://`` (on ``tls_port``) with a certificate for 127.0.0.1
        signed by a CA made for this broker (``ca_file``); see :attr:`amqps_url`.
    :param config: instead of all that, the whole rabbitmq.conf as ``config(broker)`` returns it
        once the ports are chosen (``amqp_port``, ``port`` for the management API over HTTP,
        ``tls_port`` and ``management_tls_port`` with ``tls``), e.g. the stack's broker server's
        (infra.broker) with its own certificate and definitions: no user is made here then.
    """

    health_path = "/api/overview"

    def __init__(
        self,
        data_dir: str | None = None,
        consumer_timeout: int = 1800,
        heartbeat: int = 60,
        tls: bool = True,
        config: Callable[[LocalRabbitMQ], str] | None = None,
    ):
        self.config = config
        self.management_tls_port: int | None = None
        self._own_dir = data_dir is None
        self.data_dir = data_dir
        self.consumer_timeout = consumer_timeout
        self.heartbeat = heartbeat
        self.port: int | None = None  # management (HTTP) port
        self.amqp_port: int | None = None
        self.dist_port: int | None = None
        self.epmd_port: int | None = None
        self.tls = tls
        self.tls_port: int | None = None
        self.ca_file: str | None = None
        self.node = ""
        self.admin = (ADMIN_USER, secrets.token_urlsafe(16))
        self.workload = (WORKLOAD_USER, secrets.token_urlsafe(16))
        self._proc: subprocess.Popen | None = None
        self._epmd_proc: subprocess.Popen | None = None

    # -- what clients use ---------------------------------------------------------------------
    @property
    def management_url(self) -> str:
        """The management HTTP API's base URL, ``http://127.0.0.1:PORT``."""
        return self.url

    def amqp_url_for(self, user: str, password: str, vhost: str = "/") -> str:
        """``amqp://user:password@127.0.0.1:PORT/vhost`` (user, password and vhost URL-quoted)."""
        if self.amqp_port is None:
            raise RuntimeError("LocalRabbitMQ is not started")
        return (
            f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{LOOPBACK}:"
            f"{self.amqp_port}/{quote(vhost, safe='')}"
        )

    @property
    def amqps_url(self) -> str:
        """The workload user's ``amqps://`` URL, trusting this broker's own CA (``?cafile=``)."""
        if not self.tls_port:
            raise RuntimeError("LocalRabbitMQ was started without tls")
        user, password = self.workload
        return (
            f"amqps://{quote(user, safe='')}:{quote(password, safe='')}@{LOOPBACK}:{self.tls_port}"
            f"/%2F?cafile={quote(self.ca_file, safe='/')}"
        )

    @property
    def amqp_url(self) -> str:
        """The AMQP URL of the workload user (full rights on vhost ``/``)."""
        return self.amqp_url_for(*self.workload)

    @property
    def queue_options(self) -> dict[str, str]:
        """Keyword options for ``workload.queues.open_queue("amqp", name, **options)``."""
        return {
            "url": self.amqp_url,
            "management_url": self.management_url,
            "stats_interval": STATS_INTERVAL_S,
        }

    def env(self) -> dict[str, str]:
        """Environment variables that point the workload at this broker."""
        return {
            "QW_QUEUE_BACKEND": "amqp",
            "QW_AMQP_URL": self.amqp_url,
            "QW_AMQP_MANAGEMENT_URL": self.management_url,
            "QW_AMQP_STATS_INTERVAL": str(STATS_INTERVAL_S),
        }

    def api(self, method: str, path: str, **kw) -> requests.Response:
        """One management API call as the admin user; raises on an error status."""
        resp = requests.request(
            method, self.management_url + "/api" + path, auth=self.admin, timeout=10, **kw
        )
        if resp.status_code >= 400:
            raise RuntimeError(f"RabbitMQ management {method} {path}: {resp.status_code} {resp.text[:200]}")
        return resp

    def add_user(
        self,
        name: str,
        password: str,
        vhost: str = "/",
        configure: str = ".*",
        write: str = ".*",
        read: str = ".*",
        tags: str = "",
    ) -> str:
        """Create (or update) a user with these permission regexes on ``vhost`` (created if
        missing); return its AMQP URL."""
        self.api("PUT", f"/vhosts/{quote(vhost, safe='')}")
        self.api("PUT", f"/users/{quote(name, safe='')}", json={"password": password, "tags": tags})
        self.api(
            "PUT",
            f"/permissions/{quote(vhost, safe='')}/{quote(name, safe='')}",
            json={"configure": configure, "write": write, "read": read},
        )
        return self.amqp_url_for(name, password, vhost)

    # -- start and stop ------------------------------------------------------------------------
    def _ready_status(self, status: int) -> bool:
        return status in (200, 401)  # 401: the API is up and wants credentials

    def _write_config(self) -> str:
        conf = os.path.join(self.data_dir, "rabbitmq.conf")
        with open(conf, "w") as f:
            f.write(self._own_config() if self.config is None else self.config(self))
        # quorum queues report their counts on each tick (5 s by default): 1 s, like the stats
        with open(os.path.join(self.data_dir, "advanced.config"), "w") as f:
            f.write(f"[{{rabbit, [{{quorum_tick_interval, {int(STATS_INTERVAL_S * 1000)}}}]}}].\n")
        with open(os.path.join(self.data_dir, "enabled_plugins"), "w") as f:
            f.write("[rabbitmq_management].\n")
        return conf

    def _own_config(self) -> str:
        admin, admin_pw = self.admin
        tls = []
        if self.tls:
            self.ca_file, cert, key = make_certificates(self.data_dir)
            tls = [
                f"listeners.ssl.1 = {LOOPBACK}:{self.tls_port}",
                f"ssl_options.cacertfile = {self.ca_file}",
                f"ssl_options.certfile = {cert}",
                f"ssl_options.keyfile = {key}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        return "\n".join(
            [
                *tls,
                f"listeners.tcp.1 = {LOOPBACK}:{self.amqp_port}",
                f"management.tcp.ip = {LOOPBACK}",
                f"management.tcp.port = {self.port}",
                f"default_user = {admin}",
                f"default_pass = {admin_pw}",
                "default_user_tags.administrator = true",
                f"consumer_timeout = {int(self.consumer_timeout * 1000)}",
                f"heartbeat = {self.heartbeat}",
                # fresher queue counts for the monitor and the tests (default 5 s)
                f"collect_statistics_interval = {int(STATS_INTERVAL_S * 1000)}",
                "log.console = false",
                "log.file.level = info",
                # a test box has little disk; the default 50 MB free limit is fine, say it once
                "disk_free_limit.absolute = 50MB",
                "",
            ]
        )

    def _environment(self, conf: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            {
                "HOME": self.data_dir,  # the Erlang cookie lives here
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
                "RABBITMQ_NODE_PORT": str(self.amqp_port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "ERL_EPMD_ADDRESS": LOOPBACK,
                "ERL_EPMD_PORT": str(self.epmd_port),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
                "RABBITMQ_CONFIG_FILE": conf,
                "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(self.data_dir, "advanced.config"),
                "RABBITMQ_CONF_ENV_FILE": os.path.join(self.data_dir, "rabbitmq-env.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.data_dir, "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": os.path.join(self.data_dir, "mnesia"),
                "RABBITMQ_LOG_BASE": os.path.join(self.data_dir, "log"),
                "RABBITMQ_PID_FILE": os.path.join(self.data_dir, "rabbitmq.pid"),
                # exec erl directly: the PID we hold is the broker's, and SIGTERM stops it cleanly
                "RUNNING_UNDER_SYSTEMD": "1",
            }
        )
        return env

    def start(self) -> LocalRabbitMQ:
        """Start epmd and the broker; return once AMQP and the management API answer."""
        if not installed():
            raise RuntimeError(f"RabbitMQ is not installed: {INSTALL_HINT}")
        if self.data_dir is None:
            self.data_dir = tempfile.mkdtemp(prefix="qw-rabbitmq-")
        os.makedirs(os.path.join(self.data_dir, "log"), exist_ok=True)
        open(os.path.join(self.data_dir, "rabbitmq-env.conf"), "a").close()
        if self.amqp_port is None:  # a restart keeps its ports, so clients reconnect to the same URL
            self.port, self.amqp_port, self.dist_port, self.epmd_port = (free_port() for _ in range(4))
            self.tls_port = free_port() if self.tls else None
            self.management_tls_port = free_port() if self.tls else None
            self.node = f"qw-{self.amqp_port}@localhost"
        self._start_processes()
        return self

    def _start_processes(self) -> None:
        log = os.path.join(self.data_dir, "log", "server.out")
        self._epmd_proc = subprocess.Popen(
            [_epmd(), "-address", LOOPBACK, "-port", str(self.epmd_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: _port_open(self.epmd_port), 10, "epmd", self._epmd_proc)
        conf = self._write_config()
        with open(log, "ab") as out:
            self._proc = subprocess.Popen(
                [SERVER],
                env=self._environment(conf),
                cwd=self.data_dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_until(
                lambda: _port_open(self.amqp_port) and self.healthy(), 90, "rabbitmq-server", self._proc, log
            )
            if self.config is None:  # a config of its own brings its users (definitions)
                self._ensure_workload_user()
        except BaseException:
            self._stop_processes()
            raise

    def _ensure_workload_user(self) -> None:
        wait_until(lambda: self.api("GET", "/overview").ok, 30, "rabbitmq management API")
        self.add_user(*self.workload, tags="policymaker,monitoring")  # ensure sets policies

    def kill(self) -> None:
        """SIGKILL the broker (a crash); :meth:`start` brings it back on the same ports and data."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def restart(self, while_down=None) -> None:
        """Stop the broker (not its data), call ``while_down()`` if given, and start it again on
        the same ports (an outage, for tests)."""
        self._stop_processes()
        try:
            if while_down is not None:
                while_down()
        finally:
            self._start_processes()

    def _stop_processes(self) -> None:
        stop_process(self._proc, timeout=30)
        stop_process(self._epmd_proc)
        self._proc = self._epmd_proc = None

    def stop(self) -> None:
        """Stop the broker and its epmd by PID; remove the temporary data folder."""
        self._stop_processes()
        if self._own_dir and self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
        self.port = self.amqp_port = self.tls_port = None

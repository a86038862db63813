"""A real Keystone on loopback for the local control plane (sqlite, fernet tokens, no Apache).

Two halves live here:

* the project side (runs in ``.venv``): :func:`write_config`, :func:`build_state` (db_sync, key
  repositories, bootstrap, the objects Heat needs) and :func:`set_endpoints`;
* the server side (runs in ``.venv-openstack`` as ``python -m devenv.keystone serve``): the Flask app
  under a small threaded WSGI server, and :func:`install_sqlite_begin_immediate`, which Heat's
  server uses too.

Only the standard library is imported at module level, so the same file imports in both venvs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

LOOPBACK = "127.0.0.1"
REGION = "RegionOne"

# Keystone objects the control plane creates (names only; passwords are generated per cache).
ADMIN_USER = "admin"
SERVICE_PROJECT = "service"
HEAT_USER = "heat"
STACK_DOMAIN = "heat"
STACK_DOMAIN_ADMIN = "heat_domain_admin"
DEMO_PROJECT = "demo"
DEMO_USER = "demo"
ZAQAR_USER = "zaqar"
# The local cloud's service users (admin + service in project service), made with the others so
# one Keystone state serves both the light control plane and the cloud.
CLOUD_USERS = ("nova", "placement", "glance", "neutron")
ROLES = ("admin", "member", "reader", "service", "heat_stack_user")

# Catalog: service type -> (service name, URL template). Ports are filled in at every start.
CATALOG = {
    "identity": ("keystone", "http://127.0.0.1:{keystone}/v3"),
    "orchestration": ("heat", "http://127.0.0.1:{heat}/v1/%(tenant_id)s"),
    "cloudformation": ("heat-cfn", "http://127.0.0.1:{cfn}/v1"),
    # Zaqar's endpoint is added at start (its port is chosen when it starts), only when it runs.
    "messaging": ("zaqar", "http://127.0.0.1:{zaqar}"),
    # The local cloud (devenv.cloud); without it these endpoints are removed at start, so Heat
    # does not believe in a Nova that is not there.
    "compute": ("nova", "http://127.0.0.1:{nova}/v2.1"),
    "placement": ("placement", "http://127.0.0.1:{placement}"),
    "image": ("glance", "http://127.0.0.1:{glance}"),
    "network": ("neutron", "http://127.0.0.1:{neutron}"),
}


def write_config(state_dir: Path, log_file: Path | None = None) -> Path:
    """Write ``keystone.conf`` for the state in ``state_dir`` (database, key repositories)."""
    state_dir = Path(state_dir)
    conf = state_dir / "keystone.conf"
    log = f"log_file = {log_file}\n" if log_file else ""
    conf.write_text(
        "[DEFAULT]\n"
        f"{log}"
        f"debug = {_debug()}\n"
        "[database]\n"
        f"connection = sqlite:///{state_dir / 'keystone.sqlite'}\n"
        "[token]\n"
        "provider = fernet\n"
        "expiration = 14400\n"
        "[fernet_tokens]\n"
        f"key_repository = {state_dir / 'fernet-keys'}\n"
        "[fernet_receipts]\n"
        f"key_repository = {state_dir / 'fernet-receipts'}\n"
        "[credential]\n"
        f"key_repository = {state_dir / 'credential-keys'}\n"
        "[identity]\n"
        # Fast password hashing: these users exist only on this machine for a test run.
        "password_hash_rounds = 4\n"
        # One Keystone process: an in-memory cache is coherent, and it takes a request from about
        # 0.4 s to a few ms (measured; a cloud's services validate a token on every call).
        "[cache]\n"
        "enabled = true\n"
        "backend = dogpile.cache.memory\n"
    )
    return conf


def _debug() -> str:
    """QW_CONTROLPLANE_DEBUG=1 turns on the servers' debug logs (in the run folder)."""
    return "true" if os.environ.get("QW_CONTROLPLANE_DEBUG") == "1" else "false"


def manage(venv: Path, conf: Path, *args: str) -> None:
    """Run ``keystone-manage`` from ``venv``; raise with its output if it fails."""
    cmd = [str(Path(venv) / "bin" / "keystone-manage"), "--config-file", str(conf), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        # The bootstrap password is an argument: name the subcommand, never echo the command line.
        raise RuntimeError(
            f"keystone-manage {args[0]} failed ({done.returncode}):\n"
            f"{done.stdout[-2000:]}{done.stderr[-4000:]}"
        )


def init_database(venv: Path, state_dir: Path, admin_password: str, port: int) -> Path:
    """db_sync, fernet and credential key repositories, bootstrap (admin, RegionOne, identity)."""
    conf = write_config(state_dir)
    owner = ("--keystone-user", _user_name(), "--keystone-group", _group_name())
    manage(venv, conf, "db_sync")
    manage(venv, conf, "fernet_setup", *owner)
    manage(venv, conf, "credential_setup", *owner)
    manage(
        venv,
        conf,
        "bootstrap",
        "--bootstrap-password",
        admin_password,
        "--bootstrap-username",
        ADMIN_USER,
        "--bootstrap-project-name",
        "admin",
        "--bootstrap-role-name",
        "admin",
        "--bootstrap-service-name",
        "keystone",
        "--bootstrap-region-id",
        REGION,
        "--bootstrap-public-url",
        CATALOG["identity"][1].format(keystone=port),
    )
    return conf


def _user_name() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _group_name() -> str:
    import grp

    return grp.getgrgid(os.getgid()).gr_name


def create_objects(session, secrets: dict, ports: dict) -> None:
    """Create what Heat (and the tests) need in a running Keystone, through its REST API.

    ``session`` is an admin keystoneauth session. Creates the roles, the ``service`` project
    with the ``heat`` service user (admin), the ``demo`` project and user (``member``), the
    ``heat`` stack-user domain with its admin, and the orchestration / cloudformation services.
    """
    ks = _Rest(session)
    roles = {name: ks.ensure("roles", name, {}) for name in ROLES}
    default = "default"
    service = ks.ensure("projects", SERVICE_PROJECT, {"domain_id": default})
    demo = ks.ensure("projects", DEMO_PROJECT, {"domain_id": default})
    heat = ks.ensure("users", HEAT_USER, {"domain_id": default, "password": secrets["heat"]})
    ks.grant(f"projects/{service}/users/{heat}/roles/{roles['admin']}")
    ks.grant(f"projects/{service}/users/{heat}/roles/{roles['service']}")
    zaqar = ks.ensure("users", ZAQAR_USER, {"domain_id": default, "password": secrets["zaqar"]})
    ks.grant(f"projects/{service}/users/{zaqar}/roles/{roles['service']}")
    for name in CLOUD_USERS:
        user = ks.ensure("users", name, {"domain_id": default, "password": secrets[name]})
        ks.grant(f"projects/{service}/users/{user}/roles/{roles['admin']}")
        ks.grant(f"projects/{service}/users/{user}/roles/{roles['service']}")
    demo_user = ks.ensure("users", DEMO_USER, {"domain_id": default, "password": secrets["demo"]})
    ks.grant(f"projects/{demo}/users/{demo_user}/roles/{roles['member']}")
    domain = ks.ensure("domains", STACK_DOMAIN, {"description": "Heat stack users"})
    dadmin = ks.ensure(
        "users", STACK_DOMAIN_ADMIN, {"domain_id": domain, "password": secrets["heat_domain_admin"]}
    )
    ks.grant(f"domains/{domain}/users/{dadmin}/roles/{roles['admin']}")
    for stype, (name, template) in CATALOG.items():
        if stype == "identity":
            continue  # bootstrap made it
        sid = ks.ensure("services", name, {"type": stype})
        if not all(k in ports for k in _fields(template)):
            continue
        ks.post(
            "endpoints",
            "endpoint",
            {"service_id": sid, "interface": "public", "region_id": REGION, "url": template.format(**ports)},
        )


class _Rest:
    """Just enough of Keystone's v3 API to create named objects once."""

    def __init__(self, session):
        self.s = session

    def _call(self, method, path, **kw):
        resp = self.s.request(
            f"/{path}",
            method,
            endpoint_filter={"service_type": "identity", "interface": "public"},
            raise_exc=False,
            **kw,
        )
        if resp.status_code >= 400:
            raise RuntimeError(f"keystone {method} /v3/{path}: {resp.status_code} {resp.text[:300]}")
        return resp

    def ensure(self, collection: str, name: str, body: dict) -> str:
        single = collection[:-1]
        found = self._call("GET", f"{collection}?name={name}").json()[collection]
        if found:
            return found[0]["id"]
        return self.post(collection, single, {"name": name, **body})

    def post(self, collection: str, single: str, body: dict) -> str:
        return self._call("POST", collection, json={single: body}).json()[single]["id"]

    def grant(self, path: str) -> None:
        self._call("PUT", path)


def add_endpoint(session, service_type: str, url: str) -> None:
    """Register (or re-point) the public endpoint of ``service_type`` in a running Keystone."""
    ks = _Rest(session)
    sid = ks.ensure("services", CATALOG[service_type][0], {"type": service_type})
    found = ks._call("GET", f"endpoints?service_id={sid}&interface=public").json()["endpoints"]
    if found:
        ks._call("PATCH", f"endpoints/{found[0]['id']}", json={"endpoint": {"url": url}})
    else:
        ks.post(
            "endpoints",
            "endpoint",
            {"service_id": sid, "interface": "public", "region_id": REGION, "url": url},
        )


def set_endpoints(db_path: Path, ports: dict) -> None:
    """Point every catalog endpoint at this run's ports (Keystone must not be running yet).

    The endpoints of catalog services with no port in ``ports`` (the cloud's, when only the
    light control plane runs) are removed: a client must not find a service that is not there.
    """
    con = sqlite3.connect(str(db_path))
    try:
        rows = con.execute(
            "SELECT endpoint.id, service.type FROM endpoint JOIN service ON endpoint.service_id = service.id"
        ).fetchall()
        for endpoint_id, stype in rows:
            if stype not in CATALOG:
                continue
            if all(k in ports for k in _fields(CATALOG[stype][1])):
                con.execute(
                    "UPDATE endpoint SET url = ? WHERE id = ?",
                    (CATALOG[stype][1].format(**ports), endpoint_id),
                )
            elif stype != "messaging":  # Zaqar's endpoint is re-pointed once it runs
                con.execute("DELETE FROM endpoint WHERE id = ?", (endpoint_id,))
        con.commit()
    finally:
        con.close()


def _fields(template: str) -> list[str]:
    import string

    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


# --- server side (runs in the Heat/Keystone venv) -------------------------------------------


def install_sqlite_begin_immediate(busy_timeout_ms: int = 30000) -> None:
    """Make every SQLAlchemy transaction on sqlite start with ``BEGIN IMMEDIATE``.

    oslo.db opens transactions with a plain (deferred) BEGIN; two of them that both go on to
    write fail with "database is locked" however long the busy timeout is. Taking the write lock
    up front makes them queue instead (measured: it fixed every failed Heat stack update).
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _connect(dbapi_connection, _record):
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            dbapi_connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            dbapi_connection.execute("PRAGMA journal_mode = WAL")

    # oslo.db emits its own BEGIN unless conn.info says a transaction is open: ours runs first
    # (class-level listener) and sets that marker; oslo.db's commit/rollback listeners clear it.
    @event.listens_for(Engine, "begin")
    def _begin(conn):
        if conn.dialect.name == "sqlite" and "in_transaction" not in conn.info:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.info["in_transaction"] = True

    @event.listens_for(Engine, "commit")
    @event.listens_for(Engine, "rollback")
    def _end(conn):
        conn.info.pop("in_transaction", None)


def serialized(app):
    """Let ``app`` handle one request at a time (the other connections wait their turn).

    Keystone is not safe with concurrent requests in one process: under Heat's load a request's
    auth context was built with another request's token (measured: create_trust refused, 403,
    for the demo user carrying the stack-domain admin's token). Its stock servers (uwsgi,
    Apache) run one request per process; one at a time is fast enough here.
    """
    lock = threading.Lock()

    def call(environ, start_response):
        with lock:
            result = app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                if hasattr(result, "close"):
                    result.close()

    return call


def serve_wsgi(apps: dict[int, object], log_path: str | None = None) -> None:
    """Serve each ``{port: wsgi_app}`` on 127.0.0.1 from threads until SIGTERM or SIGINT."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        allow_reuse_address = True

    access = open(log_path, "a", buffering=1) if log_path else sys.stderr

    class Handler(WSGIRequestHandler):
        def log_message(self, fmt, *args):  # one access line per request, into the log file
            access.write(f"{self.address_string()} {fmt % args}\n")

    servers = [
        make_server(LOOPBACK, port, app, server_class=Server, handler_class=Handler)
        for port, app in apps.items()
    ]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(json.dumps({"listening": sorted(apps)}), flush=True)
    while not stop.wait(1.0):
        pass
    for srv in servers:
        srv.shutdown()
    # Heat's engine and oslo threads are not daemons and would hold the process for the
    # caller's whole SIGTERM grace period: the state is a disposable copy, so leave now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m devenv.keystone serve")
    parser.add_argument("--config-dir", required=True, help="folder holding keystone.conf")
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--access-log", default=None, help="file for one line per request")
    args = parser.parse_args(argv)
    os.environ["OS_KEYSTONE_CONFIG_DIR"] = args.config_dir
    install_sqlite_begin_immediate()
    sys.argv = [sys.argv[0]]  # keystone's config parser reads argv
    from keystone.server import wsgi

    serve_wsgi({args.port: serialized(wsgi.initialize_public_application())}, args.access_log)


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python -m devenv.keystone serve --config-dir DIR --port PORT")
    _serve(sys.argv[2:])

"""A real Heat 27 on loopback: the stock engine service and both WSGI APIs in one process.

Heat 27 ships no ``heat-api`` commands, only the WSGI modules; and a broker is one more server.
So one process (``python -m devenv.heat serve``, run from ``.venv-openstack``) starts Heat's own
``EngineService`` and serves ``heat.api.openstack`` (orchestration) and ``heat.api.cfn``
(pre-signed alarm URLs) over oslo.messaging's in-process ``fake://`` transport (Heat reaches
Nova, Glance and Neutron over their REST APIs, so it needs no broker even with the cloud). In the
light control plane there is no Nova: tests map servers to ``OS::Heat::None`` in the stack
environment (:data:`NO_NOVA_ENVIRONMENT`); with the cloud (``ControlPlane(cloud=True)``) Nova,
Glance and Neutron are in the catalog and Heat's custom constraints check against them.

The project side (``.venv``) writes ``heat.conf`` (:func:`write_config`) and creates the
database once (:func:`init_database`); only the standard library is imported at module level.
"""

from __future__ import annotations

import argparse
import configparser
import copy
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from devenv import keystone

# No Nova (nor Glance) in the light control plane. A stack environment that maps servers and server
# groups to OS::Heat::None (a Heat feature, not a change of template) lets a scaling group of
# servers run in it; `without_glance` drops the only constraint that would ask Glance.
NO_NOVA_ENVIRONMENT = {
    "resource_registry": {"OS::Nova::Server": "OS::Heat::None", "OS::Nova::ServerGroup": "OS::Heat::None"}
}


def without_glance(template: dict) -> dict:
    """A copy of the HOT ``template`` without its ``glance.image`` custom constraints (Heat would
    ask Glance whether the image exists, and there is no Glance here); nothing else changes."""
    out = copy.deepcopy(template)
    for param in out.get("parameters", {}).values():
        kept = [c for c in param.get("constraints", ()) if c.get("custom_constraint") != "glance.image"]
        if "constraints" in param:
            if kept:
                param["constraints"] = kept
            else:
                del param["constraints"]
    return out


def wait_stack(api, path: str, timeout: float = 120.0) -> dict:
    """The stack at ``path`` (``/stacks/NAME/ID``) once it is no longer *_IN_PROGRESS.

    ``api`` is a keystoneauth Adapter for the orchestration service. Polls with
    ``resolve_outputs=False``: a plain GET resolves every output and can answer a transient 404
    while an update runs. A deleted stack still answers by id, with DELETE_COMPLETE.
    """
    deadline = time.monotonic() + timeout
    while True:
        resp = api.get(path, params={"resolve_outputs": False}, raise_exc=False)
        if resp.status_code == 200 and not resp.json()["stack"]["stack_status"].endswith("_IN_PROGRESS"):
            return resp.json()["stack"]
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{path} still in progress after {timeout:.0f} s")
        time.sleep(0.5)


def wait_no_deletions(api, timeout: float = 120.0) -> None:
    """Wait until no stack of the project is being deleted: in this one-process engine a delete
    overlapping a create has made Heat's trust creation fail (403)."""
    deadline = time.monotonic() + timeout
    while any(s["stack_status"] == "DELETE_IN_PROGRESS" for s in api.get("/stacks").json()["stacks"]):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"stacks still DELETE_IN_PROGRESS after {timeout:.0f} s")
        time.sleep(0.5)


def write_config(
    run_dir: Path, state_dir: Path, venv: Path, ports: dict, secrets: dict, log_file: Path | None = None
) -> Path:
    """Write ``heat.conf`` for a Heat whose database is in ``state_dir`` and Keystone on ``ports``."""
    run_dir, state_dir = Path(run_dir), Path(state_dir)
    ks = f"http://127.0.0.1:{ports['keystone']}"
    cfn = f"http://127.0.0.1:{ports['cfn']}"
    password_auth = (
        "auth_type = password\n"
        f"auth_url = {ks}/v3\n"
        f"username = {keystone.HEAT_USER}\n"
        f"password = {secrets['heat']}\n"
        "user_domain_name = Default\n"
    )
    service_auth = password_auth + (
        f"project_name = {keystone.SERVICE_PROJECT}\nproject_domain_name = Default\n"
    )
    log = f"log_file = {log_file}\n" if log_file else ""
    conf = run_dir / "heat.conf"
    (run_dir / "lock").mkdir(exist_ok=True)
    conf.write_text(
        "[DEFAULT]\n"
        f"{log}"
        f"debug = {_debug()}\n"
        "transport_url = fake://\n"
        "host = local-heat\n"
        "num_engine_workers = 1\n"
        f"auth_encryption_key = {secrets['auth_encryption_key']}\n"
        f"stack_user_domain_name = {keystone.STACK_DOMAIN}\n"
        f"stack_domain_admin = {keystone.STACK_DOMAIN_ADMIN}\n"
        f"stack_domain_admin_password = {secrets['heat_domain_admin']}\n"
        f"heat_metadata_server_url = {cfn}\n"
        f"heat_waitcondition_server_url = {cfn}/v1/waitcondition\n"
        f"region_name_for_services = {keystone.REGION}\n"
        "[database]\n"
        f"connection = sqlite:///{state_dir / 'heat.sqlite'}\n"
        "[paste_deploy]\n"
        f"api_paste_config = {Path(venv) / 'etc' / 'heat' / 'api-paste.ini'}\n"
        "[oslo_messaging_notifications]\n"
        "driver = noop\n"
        "[oslo_concurrency]\n"
        f"lock_path = {run_dir / 'lock'}\n"
        "[keystone_authtoken]\n"
        f"www_authenticate_uri = {ks}/v3\n"
        "interface = public\n"
        # Application credentials with access rules are refused (401) without it.
        "service_type = orchestration\n"
        + service_auth
        + "[trustee]\n"
        + password_auth
        + "[clients_keystone]\n"
        f"auth_uri = {ks}\n"
        "[clients]\n"
        "endpoint_type = publicURL\n"
        "[ec2authtoken]\n"
        # Without password auth and the Keystone root here, alarm_url answers 500.
        f"endpoint_override = {ks}\n" + service_auth
    )
    return conf


def _debug() -> str:
    return keystone._debug()


def init_database(venv: Path, conf: Path) -> None:
    """``heat-manage db_sync`` for the database that ``conf`` names, then
    :func:`never_reuse_ids` on it."""
    done = subprocess.run(
        [str(Path(venv) / "bin" / "heat-manage"), "--config-file", str(conf), "db_sync"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"heat-manage db_sync failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
        )
    never_reuse_ids(_sqlite_path(conf))


def _sqlite_path(conf: Path) -> Path:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(conf)
    url = parser["database"]["connection"]
    if not url.startswith("sqlite:///"):
        raise ValueError(f"{conf}: [database] connection is not a SQLite file: {url}")
    return Path(url[len("sqlite:///") :])


def never_reuse_ids(db: Path) -> list[str]:
    """Make every table of Heat's SQLite database ``db`` whose key is an integer ``id`` allocate
    ids that are never handed out twice (``AUTOINCREMENT``), as MySQL's and PostgreSQL's do;
    returns the tables changed.

    Without it a second desired-capacity update of a group fails (UPDATE_FAILED, then
    ROLLBACK_FAILED: "ResourcePropertiesData with id N not found";
    tests/controlplane/test_heat_repeated_updates.py). SQLite gives a new row max(rowid) + 1,
    so the id of the newest row, once deleted, is given to the next insert; and Heat 27 deletes
    rows by ids it still holds after the row is gone: ``Resource.clear_stored_attributes``
    (heat/engine/resource.py) deletes the attribute row ``self._attr_data_id`` and keeps the
    id, and check_resource (heat/engine/check_resource.py ``_do_check_resource``: state_set of
    an IN_PROGRESS status clears, then ``rsrc.clear_stored_attributes()`` again after the
    update) calls it twice on one object; the second ``resource_attr_data_delete``
    (heat/db/api.py) deletes whatever row now has that id, measured: a group member's new
    properties, created between the two. SQLite does not enforce the foreign key from
    ``resource.rsrc_prop_data_id`` either (oslo.db's ``sqlite_fk`` is off), so nothing refuses
    it. Heat's models declare a plain integer primary key (``sqlite`` then makes it the rowid);
    SQLite cannot add AUTOINCREMENT to a table, so each is rebuilt under the same name from
    its own CREATE statement, with its rows (none, right after db_sync) and indexes.
    """
    con = sqlite3.connect(db)
    changed = []
    try:
        tables = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
        con.execute("PRAGMA foreign_keys = OFF")
        con.execute("BEGIN")
        for name, sql in tables:
            keys = [row for row in con.execute(f'PRAGMA table_info("{name}")') if row[5]]
            if [(k[1], k[2].upper()) for k in keys] != [("id", "INTEGER")] or "AUTOINCREMENT" in sql.upper():
                continue
            rebuilt, n = re.subn(
                r"\bid INTEGER NOT NULL,", "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,", sql, count=1
            )
            rebuilt, m = re.subn(r",\s*PRIMARY KEY \(id\)", "", rebuilt, count=1)
            rebuilt, t = re.subn(
                rf'^CREATE TABLE "?{name}"? \(', f'CREATE TABLE "_new_{name}" (', rebuilt, count=1
            )
            if (n, m, t) != (1, 1, 1):
                raise RuntimeError(f"{db}: table {name} is not declared as expected: {sql}")
            indexes = [
                i
                for (i,) in con.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                    (name,),
                )
            ]
            # SQLite's own recipe for a schema change (lang_altertable.html, "other kinds"): a new
            # table, the rows, drop the old, rename the new; other tables' foreign keys name
            # the table, so they then point at the new one.
            con.execute(rebuilt)
            con.execute(f'INSERT INTO "_new_{name}" SELECT * FROM "{name}"')
            con.execute(f'DROP TABLE "{name}"')
            con.execute(f'ALTER TABLE "_new_{name}" RENAME TO "{name}"')
            for index in indexes:
                con.execute(index)
            changed.append(name)
        con.commit()
    finally:
        con.close()
    return changed


# --- server side (runs in the Heat venv) ----------------------------------------------------


def _serve(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m devenv.heat serve")
    parser.add_argument("--config-file", required=True, help="heat.conf")
    parser.add_argument("--api-port", type=int, required=True, help="orchestration API port")
    parser.add_argument("--cfn-port", type=int, required=True, help="CloudFormation API port")
    parser.add_argument("--access-log", default=None, help="file for one line per request")
    args = parser.parse_args(argv)

    # Heat's engine uses oslo.service; pick the threading backend before anything imports it.
    from oslo_service import backend

    backend.init_backend(backend.BackendType.THREADING)
    keystone.install_sqlite_begin_immediate()

    # Each init_application() resets and re-reads CONF from argv; build both APIs first, the
    # engine last, so nothing the engine sets up is reset afterwards.
    sys.argv = ["heat-api", "--config-file", args.config_file]
    from heat.api.openstack import wsgi as api_wsgi

    api_app = api_wsgi.init_application()
    sys.argv = ["heat-api-cfn", "--config-file", args.config_file]
    from heat.api.cfn import wsgi as cfn_wsgi

    cfn_app = cfn_wsgi.init_application()

    from heat.common import config
    from heat.engine import template
    from heat.rpc import api as rpc_api
    from oslo_config import cfg

    config.startup_sanity_check()
    if not template._get_template_extension_manager().names():
        sys.exit("no Heat template format plugins registered")
    from heat.engine import service as engine

    # EngineService.start() runs its RPC servers on threads of this process (no fork, unlike
    # oslo.service's launcher), which is what lets the APIs reach it over fake://.
    srv = engine.EngineService(cfg.CONF.host, rpc_api.ENGINE_TOPIC)
    srv.start()
    keystone.serve_wsgi({args.api_port: api_app, args.cfn_port: cfn_app}, args.access_log)


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: python -m devenv.heat serve --config-file F --api-port P --cfn-port Q")
    _serve(sys.argv[2:])

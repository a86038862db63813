"""The local control plane: a real Keystone and a real Heat on loopback, one catalog, a clouds.yaml;
with ``cloud=True`` also the local OpenStack cloud (devenv.cloud: Nova, Glance, Neutron, Placement
and their RabbitMQ) in the same catalog.

    cp = ControlPlane()
    cp.start()                      # about 6 s from the cached state
    env = cp.env()                  # OS_CLIENT_CONFIG_FILE + OS_CLOUD=local
    ...                             # openstacksdk / keystoneauth use it like any cloud
    cp.stop()

The Keystone database, its key repositories and Heat's database are built once into
``<repo>/.cache/controlplane/<versions>/`` (about 20 s) and every start works on a fresh copy,
so runs never see each other's stacks. The cloud's state (its databases, networks, flavors and
the base image in Glance) is built once on top of that one (``<repo>/.cache/controlplane/cloud_*``)
and copied the same way. Servers listen on free 127.0.0.1 ports and are stopped by the PIDs this
module started. ``python -m devenv.controlplane [--cloud]`` runs it in the foreground.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import secrets as _secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from devenv import cloud as local_cloud
from devenv import heat, keystone
from devenv.procs import free_port, stop_process, wait_until

REPO = Path(__file__).resolve().parents[1]
# Bump when what build_state() creates changes, so old caches are not reused.
RECIPE = "4"  # 4: Heat's tables never reuse ids (devenv.heat.never_reuse_ids)
CLOUD = "local"
ADMIN_CLOUD = "local-admin"


def openstack_venv() -> Path:
    """The OpenStack virtualenv (Keystone, Heat, Nova, Glance, Neutron, Placement):
    $QW_OPENSTACK_VENV or <repo>/.venv-openstack (``make venv-openstack``)."""
    return Path(os.environ.get("QW_OPENSTACK_VENV") or REPO / ".venv-openstack")


def state_key(venv: Path) -> str:
    """Names the cached state by what built it: Keystone and Heat versions and this recipe."""
    version = local_cloud.installed_version
    return f"keystone-{version(venv, 'keystone')}_heat-{version(venv, 'openstack_heat')}_r{RECIPE}"


def cache_dir() -> Path:
    """Where built states are kept: $QW_CACHE_DIR/controlplane or <repo>/.cache/controlplane."""
    return Path(os.environ.get("QW_CACHE_DIR") or REPO / ".cache") / "controlplane"


def _python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)  # the servers run `-m devenv.keystone|heat` from the Heat venv
    env.pop("OS_CLOUD", None)
    return env


def _http_ok(url: str, accept=range(200, 500)) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status in accept
    except urllib.error.HTTPError as err:
        return err.code in accept
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _spawn(venv: Path, module: str, args: list[str], out: Path) -> subprocess.Popen:
    """``python -m MODULE serve ARGS`` from ``venv`` in a session of its own, output to ``out``."""
    return subprocess.Popen(
        [str(venv / "bin" / "python"), "-m", module, "serve", *args],
        cwd=REPO,
        env=_python_env(),
        stdout=open(out, "ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _start_keystone(venv: Path, state: Path, port: int, log: Path) -> subprocess.Popen:
    args = [
        "--config-dir",
        str(state),
        "--port",
        str(port),
        "--access-log",
        str(log.with_suffix(".access.log")),
    ]
    return _spawn(venv, "devenv.keystone", args, log)


def build_state(venv: Path | None = None, progress=print) -> Path:
    """Build (once) and return the cached Keystone + Heat state for ``venv``'s versions.

    States of other versions or recipes are left alone (checkouts of other branches may share
    the cache and still use them); ``make clean`` removes them all."""
    venv = Path(venv or openstack_venv())
    root = cache_dir()
    target = root / state_key(venv)
    return _build_once(
        target, "the Keystone + Heat state", "~20 s", lambda work: _build(venv, work), progress
    )


def _build_once(target: Path, what: str, expected: str, build, progress) -> Path:
    """Return ``target``, first building it with ``build(work_dir)`` if it is not READY: one
    builder at a time (a lock file beside it), the others reuse its result; a failed build
    leaves nothing."""
    if (target / "READY").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "READY").exists():
            return target
        started = time.monotonic()
        progress(f"controlplane: building {what} into {target} (once, {expected})")
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            build(work)
            (work / "READY").write_text(json.dumps({"built_in_s": round(time.monotonic() - started, 1)}))
            shutil.rmtree(target, ignore_errors=True)
            work.rename(target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        progress(f"controlplane: {what} built in {time.monotonic() - started:.0f} s")
    return target


def _build(venv: Path, work: Path) -> None:
    secrets = {
        name: _secrets.token_urlsafe(18)
        for name in (
            "admin",
            "heat",
            "heat_domain_admin",
            "demo",
            "zaqar",
            "metadata",
            "rabbit",
            *keystone.CLOUD_USERS,
        )
    }
    secrets["auth_encryption_key"] = _secrets.token_hex(16)  # Heat wants exactly 32 characters
    secrets_file = work / "secrets.json"
    secrets_file.touch(mode=0o600)
    secrets_file.write_text(json.dumps(secrets))
    ports = {"keystone": free_port(), "heat": free_port(), "cfn": free_port()}

    heat_conf = heat.write_config(work, work, venv, ports, secrets)
    heat_db = threading.Thread(target=_capture, args=(heat.init_database, venv, heat_conf))
    heat_db.start()  # in parallel with Keystone's own set-up
    keystone.init_database(venv, work, secrets["admin"], ports["keystone"])
    log = work / "keystone-build.log"
    proc = _start_keystone(venv, work, ports["keystone"], log)
    try:
        wait_until(
            lambda: _http_ok(f"http://127.0.0.1:{ports['keystone']}/v3", range(200, 300)),
            60,
            "keystone (build)",
            proc,
            str(log),
        )
        keystone.create_objects(_admin_session(ports["keystone"], secrets["admin"]), secrets, ports)
    finally:
        stop_process(proc)
    heat_db.join()
    if heat_db.error:  # type: ignore[attr-defined]
        raise heat_db.error  # type: ignore[attr-defined]
    for leftover in ("keystone.conf", "heat.conf", "keystone-build.log", "keystone-build.access.log", "lock"):
        p = work / leftover
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def build_cloud_state(venv: Path | None = None, progress=print) -> Path:
    """Build (once) and return the cached state of the control plane with the cloud: a copy of
    :func:`build_state`'s, plus the cloud's databases, flavors, networks and base image."""
    venv = Path(venv or openstack_venv())
    base = build_state(venv, progress)
    image = local_cloud.base_image()
    target = cache_dir() / f"cloud_{local_cloud.state_key(venv, image)}_{base.name}"

    def build(work: Path) -> None:
        work.rmdir()
        shutil.copytree(base, work)
        cp = ControlPlane(
            run_dir=Path(tempfile.mkdtemp(prefix="qw-cloud-build-")), venv=venv, progress=progress, cloud=True
        )
        cp._own_dir = True
        try:
            cp._start_on(work, building=True)
            local_cloud.create_objects(cp.connection(ADMIN_CLOUD), image, progress)
        finally:
            cp.stop()
        (work / "BUILT_AT").write_text(str(work))  # relocate_state() rewrites it in each copy

    return _build_once(target, "the cloud's state", "about 2.5 min", build, progress)


def _copy_state(state: Path, copy: Path) -> None:
    """Copy a cached state; Glance's image files are hard links (Glance never rewrites them)."""
    shutil.rmtree(copy, ignore_errors=True)
    images = state / "glance" / "images"

    def link_or_copy(src, dst):
        if Path(src).parent == images:
            try:
                os.link(src, dst)
                return dst
            except OSError:
                pass
        return shutil.copy2(src, dst)

    shutil.copytree(state, copy, copy_function=link_or_copy)


def _capture(func, *args):
    me = threading.current_thread()
    me.error = None
    try:
        func(*args)
    except BaseException as exc:  # re-raised by the builder's thread
        me.error = exc


def _admin_session(port: int, password: str):
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3

    auth = v3.Password(
        auth_url=f"http://127.0.0.1:{port}/v3",
        username=keystone.ADMIN_USER,
        password=password,
        project_name="admin",
        user_domain_id="default",
        project_domain_id="default",
    )
    return ks_session.Session(auth=auth)


class ControlPlane:
    """A running local Keystone + Heat (+ Zaqar with ``messaging``, + the cloud with ``cloud``),
    started from a copy of the cached state.

    ``run_dir`` holds the copy, the config files, the logs and ``clouds.yaml``; a temporary one
    is made (and removed on :meth:`stop`) when none is given.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike | None = None,
        venv: str | os.PathLike | None = None,
        progress=print,
        messaging: bool = False,
        zaqar_venv: str | os.PathLike | None = None,
        cloud: bool = False,
    ):
        self.venv = Path(venv or openstack_venv())
        self.cloud = cloud
        self.rabbit = None  # devenv.rabbitmq.LocalRabbitMQ, the cloud's broker
        self.services: local_cloud.CloudServices | None = None
        self.start_seconds: float | None = None
        self.messaging = messaging
        self.zaqar_venv = zaqar_venv
        self.zaqar = None  # devenv.zaqar.LocalZaqar behind this Keystone, when messaging=True
        self._own_dir = run_dir is None
        self.run_dir = Path(run_dir) if run_dir else None
        self.progress = progress
        self.ports: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.secrets: dict[str, str] = {}

    # --- what clients use ------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Keystone's public v3 URL (the auth_url in clouds.yaml)."""
        return f"http://127.0.0.1:{self.ports['keystone']}/v3"

    @property
    def heat_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['heat']}/v1"

    @property
    def cfn_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['cfn']}/v1"

    @property
    def messaging_url(self) -> str:
        """Zaqar's URL (messaging in the catalog), when started with ``messaging=True``."""
        if self.zaqar is None:
            raise RuntimeError("this control plane runs no Zaqar (start it with messaging=True)")
        return self.zaqar.url

    @property
    def clouds_yaml(self) -> Path:
        return self.run_dir / "clouds.yaml"

    def env(self, cloud: str = CLOUD) -> dict[str, str]:
        """Environment that points openstacksdk, keystoneauth and the workload at this cloud."""
        return {"OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml), "OS_CLOUD": cloud}

    def cloud_config(self, cloud: str = CLOUD):
        """openstacksdk's CloudRegion for ``cloud`` from this control plane's clouds.yaml."""
        from openstack import config as os_config

        return os_config.OpenStackConfig(config_files=[str(self.clouds_yaml)]).get_one(cloud=cloud)

    def session(self, cloud: str = CLOUD):
        """A keystoneauth session for ``cloud`` (``local``: demo user; ``local-admin``: admin)."""
        return self.cloud_config(cloud).get_session()

    def connection(self, cloud: str = CLOUD):
        """An openstacksdk Connection for ``cloud`` (``local``: demo user; ``local-admin``: admin)."""
        import openstack

        return openstack.connection.Connection(config=self.cloud_config(cloud))

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ControlPlane:
        """Start from a fresh copy of the cached state (built first if missing); prints the time."""
        state = (build_cloud_state if self.cloud else build_state)(self.venv, self.progress)
        started = time.monotonic()  # the start from the cached state (a build is timed on its own)
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="qw-controlplane-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _copy_state(state, self.run_dir / "state")
        self._start_on(self.run_dir / "state", building=False, started=started)
        return self

    def _start_on(self, copy: Path, building: bool, started: float | None = None) -> None:
        """Run the servers on the state in ``copy``. ``building``: a new cloud state, whose
        databases are created here and whose catalog gets the cloud's endpoints."""
        started = started or time.monotonic()
        heat_conf = self._configure(copy)
        zaqar_thread = None
        if self.messaging:
            zaqar_thread = threading.Thread(target=_capture, args=(self._start_zaqar,))
            zaqar_thread.start()  # in parallel: its readiness check accepts 401 before Keystone is up
        try:
            self.procs["keystone"] = _start_keystone(
                self.venv, copy, self.ports["keystone"], self.run_dir / "keystone.out"
            )
            self.procs["heat"] = self._start_heat(heat_conf)
            if self.cloud:
                self._start_cloud(copy, building)
            self._wait_keystone()
            self._wait_heat()
            if zaqar_thread is not None:
                self._register_zaqar(zaqar_thread)
            self._write_clouds_yaml()
            if self.cloud:
                self._wait_cloud()
        except BaseException:
            if zaqar_thread is not None:
                zaqar_thread.join()
            self.stop()
            raise
        self._write_clouds_yaml()
        self._report_ready(started)

    def _configure(self, copy: Path) -> Path:
        """The run folder, the state's secrets, new ports (in Keystone's catalog too) and the
        Keystone and Heat config files for ``copy``; returns Heat's config file."""
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="qw-controlplane-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.secrets = json.loads((copy / "secrets.json").read_text())
        self.ports = {"keystone": free_port(), "heat": free_port(), "cfn": free_port()}
        if self.cloud:
            self.ports.update(local_cloud.new_ports())
        keystone.set_endpoints(copy / "keystone.sqlite", self.ports)
        keystone.write_config(copy, log_file=self.run_dir / "keystone.log")
        return heat.write_config(
            self.run_dir, copy, self.venv, self.ports, self.secrets, log_file=self.run_dir / "heat.log"
        )

    def _start_heat(self, conf: Path) -> subprocess.Popen:
        """Heat's API and CloudFormation API (one process) on their ports."""
        args = ["--config-file", str(conf), "--api-port", str(self.ports["heat"])]
        args += ["--cfn-port", str(self.ports["cfn"]), "--access-log", str(self.run_dir / "heat.access.log")]
        return _spawn(self.venv, "devenv.heat", args, self.run_dir / "heat.out")

    def _wait_keystone(self) -> None:
        """Until Keystone's v3 API answers (90 s at most, or its process exits)."""
        wait_until(
            lambda: _http_ok(self.url, range(200, 300)),
            90,
            "keystone",
            self.procs["keystone"],
            str(self.run_dir / "keystone.out"),
        )

    def _wait_heat(self) -> None:
        """Until both of Heat's APIs answer (90 s at most, or its process exits)."""
        wait_until(
            lambda: (
                _http_ok(f"http://127.0.0.1:{self.ports['heat']}/")
                and _http_ok(f"http://127.0.0.1:{self.ports['cfn']}/")
            ),
            90,
            "heat",
            self.procs["heat"],
            str(self.run_dir / "heat.out"),
        )

    def _register_zaqar(self, zaqar_thread: threading.Thread) -> None:
        """Wait for Zaqar's start (its error, if any, is raised here) and put it in the catalog."""
        zaqar_thread.join()
        if zaqar_thread.error:  # type: ignore[attr-defined]
            raise zaqar_thread.error  # type: ignore[attr-defined]
        keystone.add_endpoint(
            _admin_session(self.ports["keystone"], self.secrets["admin"]), "messaging", self.zaqar.url
        )

    def _report_ready(self, started: float) -> None:
        """Record and print how long the start took."""
        self.start_seconds = time.monotonic() - started
        what = (
            "Keystone, Heat and the cloud (Nova, Glance, Neutron, Placement)"
            if self.cloud
            else f"Keystone {self.url} and Heat {self.heat_url}"
        )
        self.progress(f"controlplane: {what} ready in {self.start_seconds:.1f} s")

    def _start_cloud(self, state: Path, building: bool) -> None:
        """The broker, then the cloud's config files, (when building) databases, and processes."""
        from devenv.rabbitmq import LocalRabbitMQ

        self.rabbit = LocalRabbitMQ(data_dir=str(self.run_dir / "rabbitmq"))
        self.rabbit.start()
        amqp = self.rabbit.add_user("openstack", self.secrets["rabbit"])
        transport_url = "rabbit://" + amqp.split("://", 1)[1]
        cfg = local_cloud.CloudConfig(
            venv=self.venv,
            state=state,
            run_dir=self.run_dir,
            ports=self.ports,
            secrets=self.secrets,
            transport_url=transport_url,
            driver=local_cloud.compute_driver(),
        )
        dirs = cfg.write_all()
        if building:
            local_cloud.init_databases(cfg, dirs)
            # The services find each other through the catalog: register them before they start.
            self._wait_keystone()
            admin = _admin_session(self.ports["keystone"], self.secrets["admin"])
            for stype in ("compute", "placement", "image", "network"):
                keystone.add_endpoint(admin, stype, keystone.CATALOG[stype][1].format(**self.ports))
        else:
            local_cloud.relocate_state(state, (state / "BUILT_AT").read_text(), transport_url)
        self.services = local_cloud.CloudServices(cfg, dirs)
        self._cloud_since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        self.services.start_apis()
        self.services.start_nova_services()
        self.services.start_floating_ips()

    def _wait_cloud(self) -> None:
        admin = _admin_session(self.ports["keystone"], self.secrets["admin"])
        self.services.wait_apis()
        local_cloud.wait_compute_ready(
            admin, self.services.cfg.state, self._cloud_since, check=self.services.check_alive
        )

    def _start_zaqar(self) -> None:
        from devenv.zaqar import LocalZaqar

        self.zaqar = LocalZaqar(
            venv=self.zaqar_venv,
            keystone={
                "auth_url": self.url,
                "username": keystone.ZAQAR_USER,
                "password": self.secrets["zaqar"],
                "project_name": keystone.SERVICE_PROJECT,
            },
        )
        self.zaqar.start()

    def _write_clouds_yaml(self) -> None:
        def cloud(user, password, project):
            return {
                "auth": {
                    "auth_url": self.url,
                    "username": user,
                    "password": password,
                    "project_name": project,
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "region_name": keystone.REGION,
                "interface": "public",
                "identity_api_version": 3,
            }

        clouds = {
            "clouds": {
                CLOUD: cloud(keystone.DEMO_USER, self.secrets["demo"], keystone.DEMO_PROJECT),
                ADMIN_CLOUD: cloud(keystone.ADMIN_USER, self.secrets["admin"], "admin"),
            }
        }
        self.clouds_yaml.touch(mode=0o600)
        self.clouds_yaml.write_text(json.dumps(clouds, indent=2))  # JSON is valid YAML

    def stop(self) -> None:
        """Stop the servers this object started (by PID) and remove a temporary run folder."""
        if self.services is not None:
            if self.services.procs.get("nova-compute") is not None and "keystone" in self.procs:
                with contextlib.suppress(Exception):  # best effort: destroy_machines() follows
                    self.services.delete_servers(
                        _admin_session(self.ports["keystone"], self.secrets["admin"])
                    )
            self.services.stop()
            self.services = None
        if self.rabbit is not None:
            self.rabbit.stop()
            self.rabbit = None
        threads = [threading.Thread(target=stop_process, args=(p,)) for p in self.procs.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.procs.clear()
        if self.zaqar is not None:
            self.zaqar.stop()
            self.zaqar = None
        if self._own_dir and self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def offer_port(self, port: int):
        """Context manager: servers booted inside it reach this machine's 127.0.0.1:``port`` at
        their own 127.0.0.1:``port`` (see :func:`devenv.cloud.offer_port`)."""
        if self.services is None:
            raise RuntimeError("offer_port needs the control plane started with cloud=True")
        return local_cloud.offer_port(self.run_dir, port)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devenv controlplane",
        description="Run a real Keystone and a real Heat on free 127.0.0.1 ports in the foreground "
        "(without --cloud no Nova and no broker: give servers the OS::Heat::None type in the stack "
        "environment), write a clouds.yaml for them and print the variables that select it.",
    )
    parser.add_argument(
        "--run-dir",
        default=None,
        help="folder for the state copy, configs, logs and clouds.yaml "
        "(default: a temporary folder removed on exit)",
    )
    parser.add_argument(
        "--venv",
        default=None,
        help="the OpenStack virtualenv (default: $QW_OPENSTACK_VENV or <repo>/.venv-openstack)",
    )
    parser.add_argument(
        "--messaging",
        action="store_true",
        help="also run Zaqar (from $QW_ZAQAR_VENV or <repo>/.venv-zaqar) with Keystone "
        "auth, registered as the messaging service in the same catalog",
    )
    parser.add_argument(
        "--cloud",
        action="store_true",
        help="also run the local cloud: Nova (api, conductor, scheduler, compute, "
        "metadata), Glance, Neutron, Placement and their RabbitMQ, in the same catalog, "
        "with flavors, the provider and public networks and the debian-12 image",
    )
    parser.add_argument(
        "--build-only", action="store_true", help="only build the cached state (if missing) and exit"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m devenv controlplane``: run the control plane until Ctrl-C or SIGTERM."""
    args = build_parser().parse_args(argv)
    if args.build_only:
        print((build_cloud_state if args.cloud else build_state)(args.venv and Path(args.venv)))
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cp = ControlPlane(run_dir=args.run_dir, venv=args.venv, messaging=args.messaging, cloud=args.cloud)
    try:
        cp.start()
    except Exception as exc:  # a clear line for a user at the terminal
        print(f"controlplane: could not start: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"orchestration: {cp.heat_url}/<project_id>   cloudformation: {cp.cfn_url}")
        if cp.zaqar is not None:
            print(f"messaging: {cp.messaging_url} (Keystone auth)")
        if cp.cloud:
            print(
                f"compute: http://127.0.0.1:{cp.ports['nova']}/v2.1   image: "
                f"http://127.0.0.1:{cp.ports['glance']}   network: http://127.0.0.1:{cp.ports['neutron']}"
                f"   (compute driver {local_cloud.compute_driver()})"
            )
        print("clouds: local (user demo, project demo, role member), local-admin (admin)")
        for key, value in cp.env().items():
            print(f"export {key}={value}")
        print("Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass
    finally:
        print("controlplane: stopping...", flush=True)
        cp.stop()
    print("controlplane: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

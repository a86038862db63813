"""Session-wide fixtures: the real local queue services every integration test talks to.

- ``zaqar``: a :class:`devenv.zaqar.LocalZaqar` (``.url``, ``.project``, ``.queue_options``,
  ``.env()``, ``.log_path(name)``), started once per session, only if a test asks for it.
- ``sqs``: a :class:`devenv.sqs.LocalSQS` (moto's server; ``.url``, ``.region``,
  ``.queue_options``, ``.env()``).
- ``rabbitmq``: a :class:`devenv.rabbitmq.LocalRabbitMQ` (Debian's rabbitmq-server as a node of
  its own on loopback; ``.amqp_url``, ``.management_url``, ``.queue_options``, ``.env()``).
- ``queue_name``: a factory of unique queue names. Zaqar's redis driver leaves a deleted queue's
  claims behind, so a re-created queue of the same name would report stale counts.
- ``backend`` / ``service``: run a test on every driver (``"zaqar"``, ``"sqs"``, ``"amqp"``) and
  get that backend's running local service.
- ``make_queue`` (on ``backend``) and ``zaqar_queue`` (Zaqar only): factories of ensured queues
  with unique names, dropped with their dead-letter queues after the test.
- ``controlplane``: one real Keystone + Heat + Zaqar-behind-Keystone
  (:class:`devenv.controlplane.ControlPlane` with ``messaging=True``) for the whole session, shared
  by tests/controlplane and tests/infra; ``heat_session``: the demo user's keystoneauth session on
  it. Tests using it create their own stacks, queues and credentials (unique names) and check only
  those, since other modules use the same catalog.
- ``cloud``: the same control plane with the local cloud in its catalog (Nova, Glance, Neutron,
  Placement, RabbitMQ; servers boot as systemd-nspawn machines). When any collected test is marked
  ``cloud``, the session's ``controlplane`` is started with the cloud, so a session never runs two
  Keystones; ``cloud`` is that object.

Subfolders add their own conftest.py for fixtures that concern only them.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid

import pytest

from workload.queues import QueuePolicy, open_queue


@pytest.fixture(scope="session")
def zaqar():
    """A real Zaqar 23 + redis on loopback for the whole session."""
    from devenv.zaqar import LocalZaqar

    with LocalZaqar() as server:
        yield server


@pytest.fixture(scope="session")
def sqs():
    """moto's SQS server on 127.0.0.1 for the whole session."""
    from devenv.sqs import LocalSQS

    with LocalSQS() as server:
        yield server


@pytest.fixture(scope="session")
def rabbitmq():
    """A real RabbitMQ 3.10 node (management plugin on) on loopback for the whole session."""
    from devenv.rabbitmq import INSTALL_HINT, LocalRabbitMQ, installed

    if not installed():
        pytest.fail(f"RabbitMQ is not installed: {INSTALL_HINT} (make test does it)")
    with LocalRabbitMQ() as server:
        yield server


#: The session fixture of each backend's local service.
SERVICE_FIXTURES = {"zaqar": "zaqar", "sqs": "sqs", "amqp": "rabbitmq"}


@pytest.fixture
def queue_name():
    """Factory: ``queue_name(prefix="t")`` gives a fresh name like ``t-3f9c0a1b2c``."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture(params=list(SERVICE_FIXTURES))
def backend(request):
    """Run a test on every driver."""
    return request.param


@pytest.fixture
def service(request, backend):
    """The running local service of ``backend`` (the session fixtures ``zaqar`` / ``sqs`` / ``rabbitmq``)."""
    return request.getfixturevalue(SERVICE_FIXTURES[backend])


@contextlib.contextmanager
def _queue_factory(backend: str, service, queue_name):
    """``make(policy=None, prefix="q", ensure=True, **options)`` -> a queue with a unique name;
    every queue made (and its dead-letter queue) is dropped at the end. Without a policy the
    queue never dead-letters by itself (max_claims=0) and claims last the minimum 60 s."""
    made = []

    def make(policy: QueuePolicy | None = None, prefix: str = "q", ensure: bool = True, **options):
        q = open_queue(backend, queue_name(prefix), **{**service.queue_options, **options})
        if ensure:
            q.ensure(policy or QueuePolicy(claim_ttl=60, claim_grace=60, max_claims=0))
        made.append(q)
        return q

    try:
        yield make
    finally:
        for q in made:
            try:
                q.drop()
            except Exception:  # a failed cleanup must not hide the test's own result
                pass


@pytest.fixture
def make_queue(backend, service, queue_name):
    with _queue_factory(backend, service, queue_name) as make:
        yield make


@pytest.fixture
def zaqar_queue(zaqar, queue_name):
    """Zaqar only: real claim TTLs and the service's own dead-lettering."""
    with _queue_factory("zaqar", zaqar, queue_name) as make:
        yield make


def _runs_cloud(items) -> bool:
    """True when one of the session's tests is marked ``cloud`` (it will ask for the cloud)."""
    return any(item.get_closest_marker("cloud") for item in items)


@pytest.hookimpl(trylast=True)  # after -m and -k: only what the session will run counts
def pytest_collection_modifyitems(config, items):
    """A session holding ``cloud`` tests runs one control plane, with the cloud in its catalog; the
    ``controlplane_only`` tests need one without it (their stand-ins apply only where a service is
    missing), so they are deselected here, said so, and ``make test`` runs them in a second
    session of their own (``-m controlplane_only``): run, not skipped."""
    if not _runs_cloud(items):
        return
    apart = [item for item in items if item.get_closest_marker("controlplane_only")]
    if apart:
        items[:] = [item for item in items if not item.get_closest_marker("controlplane_only")]
        config.hook.pytest_deselected(items=apart)
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(
                f"{len(apart)} controlplane_only tests deselected: this session runs the cloud; "
                "`pytest -m controlplane_only` runs them on a control plane without it"
            ),
            stacklevel=2,
        )


@pytest.fixture(scope="session")
def controlplane(request):
    """Keystone + Heat + Zaqar (messaging, Keystone auth) in one catalog, once per session, and
    the local cloud in the same catalog when the session holds ``cloud`` tests.

    Started by :class:`devenv.controlplane.ControlPlane` (about 6 s from the cached state, about
    35-50 s with the cloud; the first run on a machine builds those states, about 25 s and
    2.5 min) and stopped by PID at the end.
    """
    from devenv.controlplane import ControlPlane, openstack_venv

    venv = openstack_venv()
    if not (venv / "bin" / "python").exists():
        pytest.fail(
            f"no OpenStack virtualenv at {venv}: run `make venv-openstack` "
            "(make test does it) or set QW_OPENSTACK_VENV"
        )
    with_cloud = _runs_cloud(request.session.items)
    # QW_CONTROLPLANE_RUN_DIR keeps configs and logs (heat.log, keystone.log, nova.log ...).
    cp = ControlPlane(
        run_dir=os.environ.get("QW_CONTROLPLANE_RUN_DIR") or None,
        messaging=True,
        cloud=with_cloud,
        progress=lambda msg: print(msg, flush=True),
    )
    cp.start()
    try:
        yield cp
    finally:
        stopping = time.monotonic()
        cp.stop()
        if with_cloud:
            print(
                f"controlplane: the cloud started in {cp.start_seconds:.1f} s and stopped in "
                f"{time.monotonic() - stopping:.1f} s",
                flush=True,
            )


@pytest.fixture(scope="session")
def cloud(controlplane):
    """The session's control plane with the local cloud (tests using it are marked ``cloud``)."""
    if not controlplane.cloud:
        pytest.fail("the session's control plane runs without the cloud: mark the test `cloud`")
    return controlplane


@pytest.fixture(scope="session")
def heat_session(controlplane):
    """The demo user's session (role member on project demo), built from clouds.yaml."""
    return controlplane.session("local")

"""A Pulumi dynamic provider for a work queue and its dead-letter queue (Zaqar and RabbitMQ have
no Pulumi provider for them).

The calls are the project's own queue driver (:func:`workload.queues.open_queue`): ``ensure``
creates both queues and sets their policy (Zaqar: queue metadata; RabbitMQ: quorum queues, the
dead-letter exchange and a broker policy), ``drop`` deletes both. The provider
class lives in this importable module so dill pickles it by reference, and every method opens its
driver itself (sessions and sockets do not pickle).

Inputs (all strings or plain numbers, so they diff cleanly):

``backend``  the queue service (``zaqar`` or ``amqp``)
``name``     the work queue's name; the dead-letter queue is ``name + policy.dead_letter_suffix``
``cloud`` / ``region``  clouds.yaml entry and region whose credentials and catalog are used
``url`` / ``project``   an explicit Zaqar endpoint and X-Project-ID (a Zaqar without Keystone);
             amqp: the broker's ``amqp(s)://`` URL with its credentials (a secret input)
``management_url``      amqp: the broker's management API (default: the URL's host)
``policy``   the :class:`workload.queues.base.QueuePolicy` fields
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi.dynamic as dyn

from workload.queues.base import QueuePolicy

# Changing one of these means another queue: it is replaced (the old one deleted first, so a
# replacement that lands on the same name never deletes the queue it just made).
IDENTITY = ("backend", "name", "cloud", "region", "url", "project")
POLICY_FIELDS = tuple(f.name for f in dataclasses.fields(QueuePolicy))
# The driver options each backend takes from the inputs.
DRIVER_OPTIONS = {"zaqar": ("url", "project", "cloud", "region"), "amqp": ("url", "management_url")}


def identity_of(props: dict[str, Any], key: str) -> str:
    """What of input ``key`` names the queue: an amqp URL without its user and password (a new
    password is the same queue on the same broker, updated in place, not replaced)."""
    value = props.get(key) or ""
    if key == "url" and props.get("backend") == "amqp" and value:
        parts = urlsplit(value)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return value


def policy_of(props: dict[str, Any]) -> QueuePolicy:
    """The QueuePolicy in ``props['policy']`` (unknown keys refused, missing ones defaulted)."""
    given = dict(props.get("policy") or {})
    unknown = sorted(set(given) - set(POLICY_FIELDS))
    if unknown:
        raise ValueError(f"policy has unknown fields {unknown}; allowed: {list(POLICY_FIELDS)}")
    # Values cross the engine as floats: give ints back their type.
    fixed: dict[str, Any] = {
        k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in given.items()
    }
    return QueuePolicy(**fixed)


def open_driver(props: dict[str, Any]):
    """The queue driver ``props`` name (imports here: the provider runs in the engine's process)."""
    from workload.queues import open_queue

    backend = props.get("backend") or "zaqar"
    opts = {k: props[k] for k in DRIVER_OPTIONS.get(backend, ()) if props.get(k)}
    return open_queue(backend, props["name"], **opts)


def _with_driver(props: dict[str, Any], call) -> None:
    """Open the driver, ``call(driver)``, close it (the amqp driver runs a connection thread)."""
    driver = open_driver(props)
    try:
        call(driver)
    finally:
        close = getattr(driver, "close", None)
        if close is not None:
            close()


def _outs(props: dict[str, Any]) -> dict[str, Any]:
    policy = policy_of(props)
    outs = {k: props.get(k, "") for k in IDENTITY + ("management_url",)}
    outs["policy"] = dataclasses.asdict(policy)
    outs["dead_letter_queue"] = props["name"] + policy.dead_letter_suffix
    return outs


class QueuePairProvider(dyn.ResourceProvider):
    """Create, update in place, and delete a queue with its dead-letter queue."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.CheckResult:
        failures = []
        if not news.get("name"):
            failures.append(dyn.CheckFailure("name", "a queue name is required"))
        backend = news.get("backend") or "zaqar"
        if backend not in DRIVER_OPTIONS:
            failures.append(dyn.CheckFailure("backend", f"one of {sorted(DRIVER_OPTIONS)}"))
        elif backend == "amqp" and not news.get("url"):
            failures.append(dyn.CheckFailure("url", "the broker's amqp:// or amqps:// URL is required"))
        elif backend == "zaqar" and not (news.get("cloud") or news.get("url")):
            failures.append(dyn.CheckFailure("cloud", "a clouds.yaml cloud or an explicit url is required"))
        try:
            policy_of(news).validate()
        except Exception as exc:  # noqa: BLE001 - reported to the user as a check failure
            failures.append(dyn.CheckFailure("policy", str(exc)))
        return dyn.CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        _with_driver(props, lambda d: d.ensure(policy_of(props)))
        return dyn.CreateResult(id_=props["name"], outs=_outs(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        replaces = [k for k in IDENTITY if identity_of(olds, k) != identity_of(news, k)]
        # a new password or management URL: the same pair, ensured again with them
        moved = any((olds.get(k) or "") != (news.get(k) or "") for k in ("url", "management_url"))
        old_policy = policy_of(olds) if "policy" in olds else None
        changed_policy = old_policy != policy_of(news)
        if (
            "dead_letter_suffix" in (news.get("policy") or {})
            and old_policy is not None
            and old_policy.dead_letter_suffix != policy_of(news).dead_letter_suffix
        ):
            replaces.append("policy")  # another dead-letter queue name: another pair
        return dyn.DiffResult(
            changes=bool(replaces) or changed_policy or moved,
            replaces=replaces,
            stables=[],
            delete_before_replace=True,
        )

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        # ensure() sets the metadata of queues that exist: the queue keeps its messages.
        _with_driver(news, lambda d: d.ensure(policy_of(news)))
        return dyn.UpdateResult(outs=_outs(news))

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        return dyn.ReadResult(id_=id_, outs=props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _with_driver(props, lambda d: d.drop())


class QueuePair(dyn.Resource, module="queue-workers", name="QueuePair"):
    """A work queue and its dead-letter queue, as one Pulumi resource."""

    dead_letter_queue: pulumi.Output[str]
    name: pulumi.Output[str]
    policy: pulumi.Output[dict]

    def __init__(self, resource_name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        super().__init__(QueuePairProvider(), resource_name, {"dead_letter_queue": None, **props}, opts)

"""Every option of the workload, declared once; argparse options, environment parsing, validation
and the stack's settings are generated from the declaration.

DESIGN: a setting is declared where the value is used, as a field of a frozen dataclass
(``ConsumerConfig``, the policies' configs, a backend's connection options) whose metadata holds
one :class:`Setting`: type, range or choices, help, command-line flags (the seed's short options
among them), environment variable(s) and, where a stack may set it, its stack key. One small
adapter in this module reads that metadata to

* add the argparse options (help text with the range, the default and ``[env $QW_...]``),
* read the environment (a bad value names the variable, the value and what is allowed),
* validate a config object (:func:`check_fields`: ``key=value is not allowed: <what is>``),
* turn values back into environment text (:func:`env_text`), which infra/ writes into the env
  files of the consumer and the monitor, and whose keys infra/config.py turns into stack settings.

Why dataclass metadata and not pydantic: pydantic is not in the runtime dependency tree
(requirements.txt: pulumi, openstacksdk, fabric, boto3 pull none of it; only the tests get it,
through moto's OpenAPI validators), so it would be a new pinned dependency of `pulumi up`, `fab`
and the workload's container image; the policies are pure functions on frozen
dataclasses that the simulation benchmark builds by the thousand; and what is to be generated
(argparse flags with the seed's short options, ``QW_*`` variables, Pulumi keys, Heat-style
documentation) is not what pydantic models generate anyway. The adapter is one type check and one
range check per field.

Queue backends: each backend's connection options are one dataclass registered with
:func:`backend`; the CLI's ``--backend`` choices, its options and the keyword options of
:func:`workload.queues.open_queue` all come from that registry, so a new backend is one
declaration.

Credentials are not options here: they come the OpenStack way (``clouds.yaml`` with ``OS_CLOUD``,
or ``OS_*`` variables), or the AWS way for the SQS backend.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from workload.error_text import not_allowed
from workload.queues import BACKENDS as DRIVER_BACKENDS
from workload.queues.base import (
    CLAIM_GRACE_RANGE,
    CLAIM_TTL_RANGE,
    DELAY_RANGE,
    MESSAGE_TTL_RANGE,
    QueuePolicy,
)
from workload.queues.limits import AMQP, SQS, ZAQAR, Limits

DEFAULT_QUEUE = "jobs"
NOT_SET: Any = object()  # "no stack default of its own": the field's default applies
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


class SettingError(ValueError):
    """A value its setting does not accept; the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(not_allowed(key, value, allowed))


@dataclasses.dataclass(frozen=True)
class Setting:
    """One option: how it is typed, bounded, documented and named on each surface.

    ``kind`` is ``int``, ``float``, ``str`` or ``bool`` (a switch). ``lo``/``hi`` bound numbers
    (``lo_open``: strictly above ``lo``). ``optional``: None (unset) is allowed; ``none_word``
    is the text that means None (e.g. ``never``). ``stack`` is the key a Pulumi stack sets it by
    (None: not a stack setting), ``stack_default`` the stack's own default where a fleet wants
    another than a process on its own. ``name`` and ``default`` are the field's (filled in by
    :func:`declared`).
    """

    help: str
    flags: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    kind: type = str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    none_word: str | None = None
    stack: str | None = None
    stack_default: Any = NOT_SET
    metavar: str | None = None
    name: str = ""
    default: Any = None

    @property
    def long_flag(self) -> str:
        """The first ``--flag`` (the one processes started from here are given)."""
        return next(f for f in self.flags if f.startswith("--"))

    # -- what is allowed, in words -------------------------------------------------------------
    def allowed(self) -> str:
        if self.kind is bool:
            return "one of " + ", ".join(f"{t}/{f}" for t, f in zip(_TRUE, _FALSE, strict=False))
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        elif self.kind in (int, float):
            word = "an integer" if self.kind is int else "a number"
            if self.lo is not None and self.hi is not None and not self.lo_open:
                text = f"{word} from {_num(self.lo)} to {_num(self.hi)}"
            elif self.lo is not None:
                text = f"{word} {'above' if self.lo_open else 'of at least'} {_num(self.lo)}"
                text += f" and at most {_num(self.hi)}" if self.hi is not None else ""
            else:
                text = word
        else:
            text = "a string"
        if self.none_word:
            text += f", or unset ('{self.none_word}')"
        elif self.optional:
            text += ", or unset"
        return text

    # -- text <-> value ------------------------------------------------------------------------
    def parse(self, text: str, key: str | None = None) -> Any:
        """The value ``text`` stands for; :class:`SettingError` (named ``key``) if not allowed."""
        key = key or self.name
        raw = text.strip()
        if self.none_word and raw.lower() == self.none_word:
            return None
        if self.kind is bool:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise SettingError(key, text, self.allowed())
        value: int | float | str
        if self.kind in (int, float):
            try:
                value = int(raw, 10) if self.kind is int else float(raw)
            except ValueError:
                raise SettingError(key, text, self.allowed()) from None
        else:
            value = text
        return self.check(value, key, shown=text)

    def check(self, value: Any, key: str | None = None, shown: Any = NOT_SET) -> Any:
        """``value`` if it is allowed, else :class:`SettingError` naming ``key`` (default: the field)."""
        key = key or self.name
        bad = SettingError(key, value if shown is NOT_SET else shown, self.allowed())
        if value is None:
            if self.optional or self.none_word:
                return None
            raise bad
        if self.kind is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind in (int, float):
            ok_types = (int,) if self.kind is int else (int, float)
            if isinstance(value, bool) or not isinstance(value, ok_types) or math.isnan(value):
                raise bad
            if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
                raise bad
            if self.hi is not None and value > self.hi:
                raise bad
        elif not isinstance(value, str):
            raise bad
        if self.choices and value not in self.choices:
            raise bad
        return value

    def text(self, value: Any) -> str:
        """``value`` as the environment text :meth:`parse` reads back."""
        if value is None:
            return self.none_word or ""
        if self.kind is bool:
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value)) if self.kind is int else repr(value)
        return str(value)

    # -- environment ---------------------------------------------------------------------------
    def from_env(self, environ: Mapping[str, str] | None = None) -> Any:
        """The value of the first of its variables that is set and not empty, else NOT_SET."""
        environ = os.environ if environ is None else environ
        for name in self.env:
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            return self.parse(raw, key=f"environment variable {name}")
        return NOT_SET

    # -- argparse ------------------------------------------------------------------------------
    def add_to(self, parser: argparse._ActionsContainer, default: Any = NOT_SET) -> argparse.Action:
        """Add this setting as an option of ``parser``; its default is read from the environment."""
        shown_default = self.default if default in (NOT_SET, argparse.SUPPRESS) else default
        default = self.default if default is NOT_SET else default
        from_env = self.from_env()
        value = default if from_env is NOT_SET else from_env
        shown = " or ".join(f"${n}" for n in self.env)
        help_text = self.help
        if (self.kind is not bool and self.kind is not str) or self.choices:
            help_text += f"; {self.allowed()}"
        if self.kind is not bool and shown_default not in (None, "", (), []):
            help_text += f" (default: {self.text(shown_default)})"
        if shown:
            help_text += f" [env {shown}]"
        kw: dict[str, Any] = {"dest": self.name, "default": value, "help": help_text}
        if self.kind is bool:
            return parser.add_argument(*self.flags, action="store_true", **kw)
        if self.metavar:
            kw["metavar"] = self.metavar
        if self.choices:
            kw["metavar"] = "{" + ",".join(self.choices) + "}"
        return parser.add_argument(*self.flags, type=self._argparse_type, **kw)

    def _argparse_type(self, text: str) -> Any:
        try:
            return self.parse(text)
        except SettingError as exc:  # argparse prefixes "argument --flag: "
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: {exc.allowed}") from None


def setting(default: Any = None, help: str = "", **declared: Any) -> Any:
    """A dataclass field whose metadata declares its :class:`Setting` (see the module docstring)."""
    return dataclasses.field(default=default, metadata={"setting": Setting(help=help, **declared)})


def declared(cls: Any) -> list[Setting]:
    """The settings of a dataclass (or an instance), in field order, with name and default filled in."""
    out = []
    for f in dataclasses.fields(cls):
        s = f.metadata.get("setting")
        if s is not None:
            out.append(dataclasses.replace(s, name=f.name, default=f.default))
    return out


def check_fields(obj: Any, error: type[SettingError] = SettingError) -> None:
    """Every declared field of ``obj`` is of its type and in its range, or ``error`` names it."""
    for s in declared(obj):
        try:
            s.check(getattr(obj, s.name))
        except SettingError as exc:
            raise error(exc.key, exc.value, exc.allowed) from None


def add_options(
    parser: argparse._ActionsContainer,
    cls: Any,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add the options of every declared field of ``cls`` (with flags) to ``parser``.

    ``only``/``skip`` pick fields by name; ``defaults`` replaces a field's default on this parser
    (e.g. ``argparse.SUPPRESS`` where the config's own default should apply when unset).
    """
    only = None if only is None else set(only)
    for s in declared(cls):
        if s.flags and (only is None or s.name in only) and s.name not in skip:
            s.add_to(parser, (defaults or {}).get(s.name, NOT_SET))


def from_args(cls: Any, args: argparse.Namespace, **overrides: Any) -> Any:
    """An instance of ``cls`` from parsed options: every declared field the namespace holds."""
    values = {s.name: getattr(args, s.name) for s in declared(cls) if hasattr(args, s.name)}
    return cls(**{**values, **overrides})


def env_text(settings: Iterable[Setting], values: Mapping[str, Any]) -> dict[str, str]:
    """``{variable: text}`` of ``values`` (by field name) for each setting, its first variable."""
    return {s.env[0]: s.text(values[s.name]) for s in settings if s.name in values and s.env}


# -- queue backends -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Backend:
    """A queue service: its name, its connection options (a dataclass of settings) and, for
    each option, the keyword :func:`workload.queues.open_queue` takes it as (``driver_names``)."""

    name: str
    options: type
    help: str
    driver_names: Mapping[str, str]
    limits: Limits | None = None
    derived: Callable[[argparse.Namespace], dict[str, Any]] | None = None

    def check_limits(self, settings: Iterable[Setting], values: Mapping[str, Any]) -> None:
        """Values the service would refuse (a claim TTL, a claim size) refused now, before any
        request, each named by its option's flag."""
        if self.limits is not None:
            check_limits(self.limits, values, {s.name: s.long_flag for s in settings if s.flags})

    def driver_options(self, args: argparse.Namespace) -> dict[str, Any]:
        """Keyword options for the driver from parsed arguments (unset ones left out)."""
        out = {}
        for field_name, keyword in self.driver_names.items():
            value = getattr(args, field_name, None)
            if value not in (None, ""):
                out[keyword] = value
        if self.derived is not None:
            out.update(self.derived(args))
        return out


BACKEND_REGISTRY: dict[str, Backend] = {}


# Options whose range depends on the service, and the attribute of Limits that holds it.
_LIMIT_OF = {"batch": "claim_limit", "claim_ttl": "claim_ttl", "claim_grace": "claim_grace"}


def check_limits(limits: Limits, values: Mapping[str, Any], keys: Mapping[str, str] | None = None) -> None:
    """:class:`SettingError` for the first of ``values`` (by field name) outside ``limits``;
    ``keys`` names a field in the error (default: the field's name)."""
    for name, attr in _LIMIT_OF.items():
        value, bounds = values.get(name), getattr(limits, attr)
        if value is not None and not bounds[0] <= value <= bounds[1]:
            raise SettingError(
                (keys or {}).get(name, name),
                value,
                f"from {bounds[0]} to {bounds[1]} (the {limits.service} backend's limit)",
            )


def backend(
    name: str,
    help: str,
    limits: Limits | None = None,
    derived: Callable[[argparse.Namespace], dict[str, Any]] | None = None,
    **driver_names: str,
):
    """Class decorator: register the dataclass as the options of backend ``name``.

    ``limits`` are the service's hard limits (workload/queues/limits.py), checked before
    connecting; ``driver_names`` maps a field to its keyword in the driver (default: its name);
    ``derived`` gives driver options computed from other modes' options (the AMQP prefetch).
    """

    def register(cls: type) -> type:
        names = {s.name: driver_names.get(s.name, s.name) for s in declared(cls)}
        BACKEND_REGISTRY[name] = Backend(name, cls, help, names, limits, derived)
        return cls

    return register


def backends() -> tuple[str, ...]:
    """The backends the CLI offers: those registered here that the queue package has a driver for."""
    return tuple(n for n in BACKEND_REGISTRY if n in DRIVER_BACKENDS)


# The region option is shared: OpenStack's region for zaqar, AWS's for sqs.
_REGION = dict(
    flags=("-r", "--region", "--region_name"),
    env=("QW_REGION", "OS_REGION_NAME"),
    optional=True,
    stack="region",
)


@backend("zaqar", "OpenStack Messaging v2", limits=ZAQAR, zaqar_url="url", os_cloud="cloud")
@dataclasses.dataclass(frozen=True)
class ZaqarOptions:
    """How to reach a Zaqar: a URL and project (a local one), or a cloud's catalog and credentials."""

    zaqar_url: str | None = setting(
        None,
        "Zaqar endpoint, e.g. http://127.0.0.1:8888; unset: the 'messaging' endpoint of the "
        "cloud's catalog (needs OpenStack credentials)",
        flags=("--zaqar-url",),
        env=("QW_ZAQAR_URL",),
        optional=True,
    )
    project: str | None = setting(
        None,
        "project id sent as X-Project-ID to a Zaqar without Keystone (local servers)",
        flags=("--project", "--zaqar-project"),
        env=("QW_ZAQAR_PROJECT",),
        optional=True,
    )
    os_cloud: str | None = setting(
        None,
        "cloud name in clouds.yaml for Keystone credentials; OS_* variables also work",
        flags=("--os-cloud",),
        env=("OS_CLOUD",),
        optional=True,
    )
    region: str | None = setting(
        None, "region of the queue service (OpenStack region, or AWS region for sqs)", **_REGION
    )


@backend("sqs", "Amazon SQS or a server that speaks its API", limits=SQS, sqs_endpoint="endpoint_url")
@dataclasses.dataclass(frozen=True)
class SQSOptions:
    """How to reach SQS: AWS's endpoint for the region, or another (a local moto server)."""

    sqs_endpoint: str | None = setting(
        None,
        "SQS endpoint URL (e.g. a local moto server); unset: AWS's own",
        flags=("--sqs-endpoint",),
        env=("QW_SQS_ENDPOINT_URL", "QW_SQS_ENDPOINT", "AWS_ENDPOINT_URL_SQS"),
        optional=True,
    )
    region: str | None = setting(None, "region of the queue service", **_REGION)


def _amqp_prefetch(args: argparse.Namespace) -> dict[str, Any]:
    """The consumer's broker prefetch: what it keeps in hand (concurrency + prefetch, or + batch).

    The consumer's only: other modes have no ``--batch`` / ``--prefetch`` of a consumer (the
    monitor's ``--worker-concurrency``, which every stack writes for it, is ``worker_concurrency``:
    how many messages a consumer server handles, not a prefetch)."""
    if not hasattr(args, "prefetch") or not getattr(args, "concurrency", None):
        return {}
    ahead = args.batch if getattr(args, "prefetch", None) is None else args.prefetch
    return {"prefetch": min(1000, args.concurrency + ahead)}


@backend(
    "amqp",
    "RabbitMQ (AMQP 0-9-1, quorum queues)",
    limits=AMQP,
    derived=_amqp_prefetch,
    amqp_url="url",
    amqp_management_url="management_url",
    amqp_stats_interval="stats_interval",
)
@dataclasses.dataclass(frozen=True)
class AMQPOptions:
    """How to reach a RabbitMQ broker: its AMQP URL and its management API (stats, policies)."""

    amqp_url: str | None = setting(
        None,
        "AMQP broker URL, amqp://USER:PASSWORD@HOST:PORT/VHOST or amqps://...; "
        "QW_AMQP_USER / QW_AMQP_PASSWORD override the URL's credentials (never logged)",
        flags=("--amqp-url",),
        env=("QW_AMQP_URL",),
        optional=True,
    )
    amqp_management_url: str | None = setting(
        None,
        "RabbitMQ management API (stats, policies); unset: the broker host on 15672 (15671 for amqps)",
        flags=("--amqp-management-url",),
        env=("QW_AMQP_MANAGEMENT_URL",),
        optional=True,
    )
    amqp_stats_interval: float | None = setting(
        None,
        "seconds the broker's management figures may lag (its collect_statistics_interval; "
        "unset: RabbitMQ's default, 5)",
        flags=("--amqp-stats-interval",),
        env=("QW_AMQP_STATS_INTERVAL",),
        kind=float,
        lo=0,
        hi=60,
        optional=True,
    )


# A new backend is one more dataclass like these, registered above this line (QueueOptions
# reads --backend's choices from the registry).


@dataclasses.dataclass(frozen=True)
class QueueOptions:
    """Which queue, on which service (every mode has these)."""

    queue: str = setting(
        DEFAULT_QUEUE,
        "name of the work queue; its dead-letter queue is this name plus '-dlq'",
        flags=("-q", "--queue", "--queue_name"),
        env=("QW_QUEUE",),
        stack="queueName",
    )
    backend: str = setting(
        "zaqar",
        "queue service",
        flags=("-b", "--backend"),
        env=("QW_QUEUE_BACKEND", "QW_BACKEND"),
        choices=backends(),
        stack="queueBackend",
    )


_P = QueuePolicy()


@dataclasses.dataclass(frozen=True)
class QueuePolicyOptions:
    """The policy `ensure` (and `--ensure`) gives the queue pair; the stack's queue settings."""

    message_ttl: int = setting(
        _P.message_ttl,
        "seconds a message lives in the queue",
        flags=("--message-ttl",),
        env=("QW_MESSAGE_TTL",),
        kind=int,
        lo=MESSAGE_TTL_RANGE[0],
        hi=MESSAGE_TTL_RANGE[1],
        stack="messageTtl",
    )
    policy_claim_ttl: int = setting(
        _P.claim_ttl,
        "seconds a consumer's claim lasts unless it asks for another (the queue's default claim)",
        flags=("--policy-claim-ttl",),
        env=("QW_POLICY_CLAIM_TTL",),
        kind=int,
        lo=CLAIM_TTL_RANGE[0],
        hi=CLAIM_TTL_RANGE[1],
        stack="claimTtl",
    )
    policy_grace: int = setting(
        _P.claim_grace,
        "seconds a claimed message outlives its claim",
        flags=("--policy-grace",),
        env=("QW_POLICY_GRACE",),
        kind=int,
        lo=CLAIM_GRACE_RANGE[0],
        hi=CLAIM_GRACE_RANGE[1],
        stack="claimGrace",
    )
    delay: int = setting(
        _P.delay,
        "seconds before a posted message can be claimed",
        flags=("--delay",),
        env=("QW_DELAY",),
        kind=int,
        lo=DELAY_RANGE[0],
        hi=DELAY_RANGE[1],
    )
    max_claims: int = setting(
        _P.max_claims,
        "claims after which the service dead-letters a message; 0 = never",
        flags=("--max-claims",),
        env=("QW_MAX_CLAIMS",),
        kind=int,
        lo=0,
        hi=1000,
        stack="maxClaims",
    )
    dead_letter_ttl: int = setting(
        _P.dead_letter_ttl,
        "seconds a message lives in the dead-letter queue",
        kind=int,
        lo=MESSAGE_TTL_RANGE[0],
        hi=MESSAGE_TTL_RANGE[1],
        stack="deadLetterTtl",
    )

    def policy(self) -> QueuePolicy:
        """The queue interface's own policy object."""
        return QueuePolicy(
            message_ttl=self.message_ttl,
            claim_ttl=self.policy_claim_ttl,
            claim_grace=self.policy_grace,
            delay=self.delay,
            max_claims=self.max_claims,
            dead_letter_ttl=self.dead_letter_ttl,
        )


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """Logging (every mode has these)."""

    debug: bool = setting(
        False,
        "debug logging on stderr (requests to the queue service, timings)",
        flags=("-d", "--debug"),
        env=("QW_DEBUG",),
        kind=bool,
    )
    log_file: str | None = setting(
        None,
        "append JSON-lines logs to this file instead of stdout",
        flags=("--log-file",),
        env=("QW_LOG_FILE",),
        optional=True,
    )


def connection_settings() -> list[Setting]:
    """The queue's and every backend's options, each once (a shared field such as region once)."""
    seen: dict[str, Setting] = {}
    for cls in (QueueOptions, *(b.options for b in BACKEND_REGISTRY.values())):
        for s in declared(cls):
            seen.setdefault(s.name, s)
    return list(seen.values())


def add_queue_options(parser: argparse.ArgumentParser) -> None:
    """Options naming the queue and how to reach it; shared by every mode."""
    g = parser.add_argument_group("queue service")
    backend_help = "; ".join(f"{b.name}: {b.help}" for b in BACKEND_REGISTRY.values() if b.name in backends())
    for s in connection_settings():
        if s.name == "backend":
            s = dataclasses.replace(s, help=f"queue service ({backend_help})")
        s.add_to(g)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Logging options shared by every mode."""
    add_options(parser.add_argument_group("output"), OutputOptions)


def queue_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword options for :func:`workload.queues.open_queue` from parsed arguments."""
    return BACKEND_REGISTRY[args.backend].driver_options(args)


def queue_argv(args: argparse.Namespace) -> list[str]:
    """The queue options of ``args`` as command-line arguments (for processes started from here)."""
    out = []
    for s in connection_settings():
        value = getattr(args, s.name, None)
        if value not in (None, ""):
            out += [s.long_flag, s.text(value)]
    return out


def open_queue(args: argparse.Namespace, name: str | None = None):
    """Open the queue the arguments name (or ``name`` on the same service)."""
    from workload.queues import open_queue as _open

    return _open(args.backend, name or args.queue, **queue_options(args))


# -- one-off options (not a config's fields) ---------------------------------------------------------
def option(
    parser: argparse._ActionsContainer,
    *flags: str,
    env: str | tuple[str, ...],
    help: str,
    default: Any = None,
    type: type = str,
    flag: bool = False,
    choices: Iterable[str] = (),
    dest: str | None = None,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    metavar: str | None = None,
) -> argparse.Action:
    """Add one option that belongs to no config dataclass, through the same :class:`Setting`."""
    name = dest or next(f for f in flags if f.startswith("--"))[2:].replace("-", "_")
    s = Setting(
        help=help,
        flags=flags,
        env=(env,) if isinstance(env, str) else tuple(env),
        kind=bool if flag else type,
        lo=lo,
        hi=hi,
        lo_open=lo_open,
        choices=tuple(choices),
        optional=default is None,
        metavar=metavar,
        name=name,
        default=bool(default) if flag else default,
    )
    return s.add_to(parser)

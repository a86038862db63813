"""Every setting of a stack, declared once, typed and validated before any resource exists.

The schema follows Heat's ``properties_schema`` style: one :class:`Setting` per key with its type,
constraints, default and description; :func:`validate` holds the rules that join several keys.
:func:`load` is pure (a mapping of raw strings in, a :class:`StackConfig` out) so every error can be
tested without Pulumi; :func:`from_pulumi` feeds it the stack's config.

Two kinds of settings, one schema:

* the stack's own (where, servers, image, queue policy, credentials), declared in :data:`INFRA`;
* the options of the programs the stack runs (the consumer's and the monitor's), which are not
  declared here at all: every workload option with a stack key (workload/settings.py) becomes a
  setting of the same type, range, default and help, and :func:`program_env` writes its value into
  that program's env file under the option's own variable. A new workload option with a stack key
  is a stack setting, documented, validated and written, with no change here.

Every error is a :class:`ConfigError` naming the key, the value and what is allowed, e.g.::

    queue-workers:maxSize='0' is not allowed: an integer from 1 to 10000
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from workload import settings as wsettings
from workload.queues.base import QueuePolicy

PROJECT = "queue-workers"
TYPE_PREFIX = f"{PROJECT}:index:"  # every component's type token starts with it

# Setting types (the names Heat's schema uses).
STRING, INTEGER, NUMBER, BOOLEAN, LIST, MAP = "string", "integer", "number", "boolean", "list", "map"
_KINDS = {int: INTEGER, float: NUMBER, str: STRING, bool: BOOLEAN}

_REQUIRED = object()
#: What ``python -m infra render`` reads for an encrypted value it cannot decrypt offline (a real
#: ``pulumi up`` hands the program the decrypted value, never this).
OFFLINE_SECRET = "<secret>"


class ConfigError(ValueError):
    """A setting's value is not allowed. Names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        shown = _Shown("<secret>") if key in SECRET_KEYS else value
        super().__init__(wsettings.not_allowed(f"{PROJECT}:{key}", shown, allowed))


class _Shown(str):
    """A placeholder printed as it is (not quoted) in an error."""

    def __repr__(self) -> str:
        return str(self)


# -- constraints --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Range:
    """min <= value <= max (either bound may be None)."""

    min: float | None = None
    max: float | None = None

    def ok(self, value: Any) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"from {self.min} to {self.max}"
        return f"at least {self.min}" if self.min is not None else f"at most {self.max}"


@dataclasses.dataclass(frozen=True)
class AllowedValues:
    values: tuple[Any, ...]

    def ok(self, value: Any) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclasses.dataclass(frozen=True)
class Pattern:
    regex: str
    meaning: str

    def ok(self, value: Any) -> bool:
        return re.fullmatch(self.regex, value) is not None

    def describe(self) -> str:
        return self.meaning


@dataclasses.dataclass(frozen=True)
class Check:
    """A named predicate for what a regex cannot say (CIDRs, URLs)."""

    fn: Callable[[Any], bool]
    meaning: str

    def ok(self, value: Any) -> bool:
        try:
            return bool(self.fn(value))
        except ValueError:
            return False

    def describe(self) -> str:
        return self.meaning


def _text(value: Any) -> str:
    """An item of a list or map setting as the text a server will see."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _is_cidr(value: str) -> bool:
    ipaddress.ip_network(value, strict=True)
    return True


def _is_iso_time(value: str) -> bool:
    import datetime

    datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


NAME = Pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}", "a name of letters, digits, '.', '_' or '-'")
# Zaqar queue names: [a-zA-Z0-9_-]{1,64}; leave room for the dead-letter suffix.
QUEUE_NAME = Pattern(
    r"[A-Za-z0-9_-]{1,60}",
    "1 to 60 letters, digits, '_' or '-' (Zaqar's queue-name rule, leaving room for the '-dlq' suffix)",
)
URL = Pattern(r"https?://[^\s/]+(/\S*)?", "an http(s) URL")
AMQP_URL = Pattern(
    r"amqps?://[^\s/@]+@[^\s/@]+(/\S*)?",
    "an amqp:// or amqps:// URL with user and password, "
    "amqps://USER:PASSWORD@HOST:5671/VHOST (?cafile=PATH for a private CA)",
)
# A container image pinned to a version: [registry/]path:tag or ...@sha256:<64 hex>; never latest.
_IMAGE_REF = re.compile(
    r"([a-z0-9][a-z0-9.-]*(:[0-9]+)?/)?"  # registry[:port]/ (optional)
    r"[a-z0-9]+([._/-][a-z0-9]+)*"  # the repository path
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64})"  # tag, digest
)
IMAGE_REF = Check(
    lambda v: _IMAGE_REF.fullmatch(v) is not None and not v.endswith(":latest"),
    "a container image pinned by tag or digest, e.g. docker.io/library/rabbitmq:3.13.7-management "
    "or rabbitmq@sha256:<64 hex> (not :latest, not untagged)",
)
# A URL a server reads: no credentials in it (they go to the secret part of the env file).
PLAIN_URL = Pattern(r"https?://[^\s/@]+(/\S*)?", "an http(s) URL without user or password")
CIDR = Check(_is_cidr, "an IPv4 or IPv6 network in CIDR form with no host bits set, e.g. 203.0.113.0/24")
ONE_LINE = Pattern(r"[^\r\n]*", "values on one line (no line breaks)")
ENV_NAME = Pattern(r"QW_[A-Z0-9_]+", "environment variable names starting with QW_ (upper case, digits, '_')")


# -- the schema ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
    """One key of the stack's config (``queue-workers:<key>``)."""

    key: str
    type: str
    description: str
    default: Any = _REQUIRED
    constraints: tuple = ()
    item_constraints: tuple = ()  # for lists: each item; for maps: each value
    key_constraints: tuple = ()  # for maps: each key
    secret: bool = False
    # Set for a workload option: (program, its declaration) for each program it is written for.
    feeds: tuple[tuple[str, wsettings.Setting], ...] = ()

    @property
    def option(self) -> wsettings.Setting | None:
        return self.feeds[0][1] if self.feeds else None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def allowed(self) -> str:
        if self.option is not None:
            return self.option.allowed()
        kind = {
            STRING: "a string",
            INTEGER: "an integer",
            NUMBER: "a number",
            BOOLEAN: "true or false",
            LIST: "a list",
            MAP: "a map",
        }[self.type]
        parts = [kind] + [c.describe() for c in self.constraints]
        if self.item_constraints:
            parts.append("each item " + ", ".join(c.describe() for c in self.item_constraints))
        if self.key_constraints:
            parts.append("keys " + ", ".join(c.describe() for c in self.key_constraints))
        return " ".join(parts)

    def coerce(self, raw: Any) -> Any:
        """Turn the raw config value (Pulumi hands every value over as a string) into its type."""
        opt = self.option
        if opt is not None:
            return self._coerce_option(opt, raw)
        value = raw
        if self.type == INTEGER:
            if isinstance(raw, bool):
                raise ConfigError(self.key, raw, self.allowed())
            try:
                value = int(str(raw).strip(), 10)
            except ValueError:
                raise ConfigError(self.key, raw, self.allowed()) from None
        elif self.type == BOOLEAN:
            text = str(raw).strip().lower()
            if text not in ("true", "false"):
                raise ConfigError(self.key, raw, self.allowed())
            value = text == "true"
        elif self.type in (LIST, MAP):
            if isinstance(raw, str):
                try:
                    value = json.loads(raw)
                except ValueError:
                    raise ConfigError(self.key, raw, self.allowed() + " (as YAML or JSON)") from None
            want = list if self.type == LIST else dict
            if not isinstance(value, want):
                raise ConfigError(self.key, raw, self.allowed())
            if isinstance(value, dict):  # the type is MAP (checked just above)
                value = {str(k): _text(v) for k, v in value.items()}
            else:
                value = [_text(v) for v in value]
        elif self.type == STRING:
            if not isinstance(raw, str):
                raise ConfigError(self.key, raw, self.allowed())
            value = raw.strip()
        for c in self.constraints:
            if not c.ok(value):
                raise ConfigError(self.key, raw, self.allowed())
        items = value if self.type == LIST else value.values() if self.type == MAP else ()
        for item in items:
            for c in self.item_constraints:
                if not c.ok(item):
                    shown = "a value" if self.secret else repr(item)
                    raise ConfigError(self.key, raw, f"{self.allowed()} ({shown} is not)")
        for k in value if self.type == MAP else ():
            for c in self.key_constraints:
                if not c.ok(k):
                    raise ConfigError(self.key, raw, f"{self.allowed()} ({k!r} is not)")
        return value

    def _coerce_option(self, opt: wsettings.Setting, raw: Any) -> Any:
        try:
            if isinstance(raw, str):
                if raw.strip() == "" and (opt.optional or opt.none_word):
                    return None
                return opt.parse(raw)
            return opt.check(float(raw) if opt.kind is float and isinstance(raw, int) else raw)
        except wsettings.SettingError:
            raise ConfigError(self.key, raw, opt.allowed()) from None


S = Setting


@functools.cache
def _consumer_parser() -> argparse.ArgumentParser:
    """The consumer's own command line (workload/cli.py): where its options are declared."""
    from unittest import mock

    from workload.cli import build_parser

    # its options take their defaults from the environment: read only their declarations, so a
    # QW_* variable in the deployer's shell neither changes nor breaks the stack's reservations
    with mock.patch.dict(os.environ, clear=True):
        parser = build_parser()
    modes = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return modes.choices["consumer"]


def _declared_setting(action: argparse.Action) -> wsettings.Setting | None:
    """The :class:`workload.settings.Setting` an option was added from (its value parser is the
    setting's), or None for one that takes no value."""
    owner = getattr(action.type, "__self__", None)
    return owner if isinstance(owner, wsettings.Setting) else None


def _handler_env() -> dict[str, str]:
    """``{kind: variable}`` of the consumer's handler options (``--exec`` -> ``exec: QW_EXEC``): the
    options of its one exclusive group, which the stack's handler setting chooses between."""
    (group,) = _consumer_parser()._mutually_exclusive_groups
    out = {}
    for action in group._group_actions:
        s = _declared_setting(action)
        assert s is not None and s.env, f"handler option {action.option_strings} declares no variable"
        out[s.long_flag[2:]] = s.env[0]
    return out


#: ``{handler kind: variable}`` of the stack's handler setting (``exec:cat`` -> ``QW_EXEC=cat``).
HANDLER_ENV: dict[str, str] = _handler_env()


INFRA: tuple[Setting, ...] = (
    # where
    S(
        "cloud",
        STRING,
        "Entry of clouds.yaml the provider, the queue provider and `fab` use",
        _REQUIRED,
        (NAME,),
    ),
    S("region", STRING, "OpenStack region of this stack", _REQUIRED, (NAME,)),
    S(
        "identityEndpoint",
        STRING,
        "Keystone v3 URL the servers authenticate against; default: the cloud's auth_url from clouds.yaml",
        "",
        (Check(lambda v: v == "" or URL.ok(v), "an http(s) URL or empty"),),
    ),
    # servers
    S("flavor", STRING, "Nova flavor of the consumer servers", _REQUIRED, (NAME,)),
    S(
        "monitorFlavor",
        STRING,
        "Nova flavor of the monitor server; default: flavor",
        "",
        (Check(lambda v: v == "" or NAME.ok(v), "a flavor name or empty"),),
    ),
    S("network", STRING, "Neutron network (name or id) the servers attach to", _REQUIRED, (NAME,)),
    S(
        "keyPair",
        STRING,
        "Nova key pair for SSH to the servers; empty: none",
        "",
        (Check(lambda v: v == "" or NAME.ok(v), "a key pair name or empty"),),
    ),
    S(
        "serverName",
        STRING,
        "Prefix of the servers' names (the seed's -s)",
        "qw-worker",
        (Pattern(r"[a-z0-9][a-z0-9-]{0,40}", "1 to 41 lower-case letters, digits or '-'"),),
    ),
    S(
        "sshCidrs",
        LIST,
        "Networks allowed to SSH to the servers; empty: no ingress at all",
        [],
        item_constraints=(CIDR,),
    ),
    # template image
    S(
        "templateImageName",
        STRING,
        "Template the image was baked from (`fab bake-template`: the image is named "
        "<name>-v<version>-<time> and carries qw_template_name=<name>, qw_bake_state=complete)",
        "queue-workers-consumer",
        (NAME,),
    ),
    S(
        "templateImageProperties",
        MAP,
        "Further Glance properties the template image must carry, e.g. qw_template_version",
        {},
        key_constraints=(Pattern(r"[A-Za-z0-9_.:-]{1,255}", "property names"),),
    ),
    # group size
    S("desiredSize", INTEGER, "Consumer servers at creation; default: minSize", -1, (Range(-1, 1000),)),
    S(
        "rollingBatchSize",
        INTEGER,
        "Servers replaced at once when the template image changes",
        1,
        (Range(1, 100),),
    ),
    S("rollingPause", INTEGER, "Seconds between rolling-update batches", 30, (Range(0, 3600),)),
    # scaling
    S("scaleUpStep", INTEGER, "Servers added by one scale-up signal", 1, (Range(1, 100),)),
    S("scaleDownStep", INTEGER, "Servers removed by one scale-down signal", 1, (Range(1, 100),)),
    S(
        "monitorEnabled",
        BOOLEAN,
        "Run the monitor on its own server; false: run `python -m workload monitor` wherever you like",
        True,
    ),
    # queue
    S(
        "queueBackend",
        STRING,
        "Queue service: zaqar (the cloud's Zaqar) or amqp (a RabbitMQ broker, see amqpBroker)",
        "zaqar",
        (AllowedValues(("zaqar", "amqp")),),
    ),
    S(
        "amqpBroker",
        STRING,
        "amqp: which broker; existing: the one amqpUrl names (the stack declares the queue "
        "pair on it and deletes it on destroy); server: one broker server the stack declares "
        "(RabbitMQ in a container on the template image, TLS and per-role users it makes; "
        "amqpUrl and the user settings stay empty)",
        "existing",
        (AllowedValues(("existing", "server")),),
    ),
    S(
        "amqpBrokerImage",
        STRING,
        "amqp, broker server: the RabbitMQ container image, pinned by tag or digest (with the "
        "management plugin: stats for the monitor)",
        "docker.io/library/rabbitmq:3.13.7-management",
        (IMAGE_REF,),
    ),
    S(
        "amqpBrokerFlavor",
        STRING,
        "amqp, broker server: its Nova flavor; default: flavor",
        "",
        (Check(lambda v: v == "" or NAME.ok(v), "a flavor name or empty"),),
    ),
    S(
        "amqpBrokerVolumeSize",
        INTEGER,
        "amqp, broker server: GB of the Cinder volume holding the broker's data (kept when the "
        "server is replaced; deleted by pulumi destroy); 0: no volume, for a cloud without block "
        "storage: the data is on the server's root disk and is LOST when the server is replaced "
        "(a new template image, flavor or user data) or deleted",
        10,
        (Range(0, 16384),),
    ),
    S(
        "amqpUrl",
        STRING,
        "amqp, existing broker: URL of a user that may declare the queues and set their policy "
        "(configure rights, tag policymaker); consumers and the monitor use it too unless amqpConsumerUser / "
        "amqpMonitorUser are set",
        "",
        (Check(lambda v: v in ("", OFFLINE_SECRET) or AMQP_URL.ok(v), AMQP_URL.meaning + ", or empty"),),
        secret=True,
    ),
    S(
        "amqpManagementUrl",
        STRING,
        "amqp: the broker's management API (stats, policies); default: the amqpUrl "
        "host on 15672, or 15671 for amqps",
        "",
        (Check(lambda v: v == "" or PLAIN_URL.ok(v), PLAIN_URL.meaning + ", or empty"),),
    ),
    S(
        "amqpConsumerUser",
        STRING,
        "amqp: the broker user the consumers log in as; empty: amqpUrl's",
        "",
        (Check(lambda v: v == "" or NAME.ok(v), "a user name or empty"),),
    ),
    S("amqpConsumerPassword", STRING, "amqp: amqpConsumerUser's password", "", (ONE_LINE,), secret=True),
    S(
        "amqpMonitorUser",
        STRING,
        "amqp: the broker user the monitor logs in as (tag monitoring); empty: amqpUrl's",
        "",
        (Check(lambda v: v == "" or NAME.ok(v), "a user name or empty"),),
    ),
    S("amqpMonitorPassword", STRING, "amqp: amqpMonitorUser's password", "", (ONE_LINE,), secret=True),
    S("queueName", STRING, "Work queue name; its dead-letter queue is <name>-dlq", "jobs", (QUEUE_NAME,)),
    # consumer
    S(
        "handler",
        STRING,
        "What a consumer runs per message: exec:<command>, python:<module:function> or http:<url>",
        "exec:cat",
        (
            Pattern(
                rf"({'|'.join(HANDLER_ENV)}):\S.*",  # the consumer's handler options (workload/cli.py)
                "exec:<command>, python:<pkg.mod:func> or http:<url>",
            ),
        ),
    ),
    S(
        "consumerEnv",
        MAP,
        "Extra QW_* settings written to every consumer's env file",
        {},
        item_constraints=(ONE_LINE,),
        key_constraints=(ENV_NAME,),
    ),
    S(
        "consumerSecretEnv",
        MAP,
        "Extra QW_* settings that are secrets (set with --secret)",
        {},
        item_constraints=(ONE_LINE,),
        key_constraints=(ENV_NAME,),
        secret=True,
    ),
    # credentials
    S(
        "credentialRoles",
        LIST,
        "Roles the application credentials carry",
        ["member"],
        item_constraints=(NAME,),
    ),
    S(
        "credentialExpiresAt",
        STRING,
        "When the application credentials expire (ISO 8601); empty: never",
        "",
        (
            Check(
                lambda v: v == "" or _is_iso_time(v),
                "an ISO 8601 time such as 2027-01-01T00:00:00Z, or empty",
            ),
        ),
    ),
    S(
        "stackTimeout",
        INTEGER,
        "Minutes Heat may take to create or update the worker group",
        60,
        (Range(1, 1440),),
    ),
)


# -- the workload's options with a stack key --------------------------------------------------------
def workload_options() -> dict[str, list[wsettings.Setting]]:
    """Every declared option of what the stack makes: the queue pair's policy (the options of
    `ensure`, given to the queue provider), the consumer's and the monitor's (written to their
    env files)."""
    from workload.autoscale.monitor import monitor_settings
    from workload.consumer import ConsumerConfig

    return {
        "queue": wsettings.declared(wsettings.QueuePolicyOptions),
        "consumer": wsettings.declared(ConsumerConfig),
        "monitor": monitor_settings(),
    }


# What a workload option's stack setting also sets in the stack itself.
STACK_NOTES = {
    "minSize": "also the Heat group's min_size",
    "maxSize": "also the Heat group's max_size",
    "scaleUpCooldown": "also Heat's cooldown of the group and of its scale-up policy (Heat keeps one "
    "cooldown per group, started by creation, updates and either policy's resize)",
    "scaleDownCooldown": "also the cooldown of Heat's scale-down policy",
    "claimTtl": "also what each consumer claims for (its --claim-ttl)",
    "claimGrace": "also each consumer's --grace",
    "maxClaims": "each consumer's --max-attempts is this plus one, a backstop",
}


_PROGRAM = {"queue": "queue pair; ensure", "consumer": "consumer", "monitor": "monitor"}


def _from_workload() -> tuple[Setting, ...]:
    """One stack setting per stack key the workload's options declare (one key may feed both programs,
    e.g. consumerConcurrency: the consumer's -w and the target policy's --worker-concurrency)."""
    feeds: dict[str, list[tuple[str, wsettings.Setting]]] = {}
    for program, options in workload_options().items():
        for opt in options:
            if opt.stack:
                feeds.setdefault(opt.stack, []).append((program, opt))
    out = []
    for key, pairs in feeds.items():
        first = pairs[0][1]
        for _, other in pairs[1:]:  # one key, one meaning: the declarations must agree
            if (other.kind, other.lo, other.hi, other.choices, other.none_word) != (
                first.kind,
                first.lo,
                first.hi,
                first.choices,
                first.none_word,
            ):
                raise TypeError(f"stack key {key}: {first.name} and {other.name} are declared differently")
        default = first.default if first.stack_default is wsettings.NOT_SET else first.stack_default
        # a setting whose stack default is a value keeps one: "unset" is no choice there
        pairs = [
            (program, dataclasses.replace(opt, optional=opt.optional and default is None))
            for program, opt in pairs
        ]
        where = "; ".join(
            f"{_PROGRAM[program]} {opt.long_flag} ${opt.env[0]}" if opt.flags else _PROGRAM[program]
            for program, opt in pairs
        )
        note = f"; {STACK_NOTES[key]}" if key in STACK_NOTES else ""
        out.append(
            Setting(key, _KINDS[first.kind], f"{first.help}{note} ({where})", default, feeds=tuple(pairs))
        )
    return tuple(out)


SCHEMA: tuple[Setting, ...] = INFRA + _from_workload()
SETTINGS: dict[str, Setting] = {s.key: s for s in SCHEMA}
SECRET_KEYS = frozenset(s.key for s in SCHEMA if s.secret)


def _every_name_of(names: set[str]) -> tuple[str, ...]:
    """``names`` and every other variable of a consumer option one of them names (QW_BACKEND
    beside QW_QUEUE_BACKEND), so no alias overrides what the stack set."""
    out = set(names)
    for action in _consumer_parser()._actions:
        s = _declared_setting(action)
        if s is not None and names & set(s.env):
            out.update(s.env)
    return tuple(sorted(out))


# The consumer settings the stack writes itself from its own settings (the queue, the handler
# options, the credential's limits, the broker); consumerEnv may not override them nor any option
# a stack key sets. The handler options come from the consumer's parser (a new kind is reserved by
# being declared); the rest are what infra.hot's consumer_env and the broker's env write.
CONSUMER_FIXED_ENV: tuple[str, ...] = _every_name_of(
    {
        "QW_QUEUE",
        "QW_QUEUE_BACKEND",
        "QW_REGION",
        *HANDLER_ENV.values(),
        "QW_CLAIM_TTL",
        "QW_CLAIM_GRACE",
        "QW_MAX_ATTEMPTS",
        "QW_NO_BULK_DELETE",
        "QW_DRAIN_WATCH",
        "QW_DRAINED_FILE",
        "QW_AMQP_URL",
        "QW_AMQP_MANAGEMENT_URL",
        "QW_AMQP_USER",
        "QW_AMQP_PASSWORD",
        "QW_AMQP_CONFIG",
        "QW_AMQP_BROKER",
    }
)
RESERVED_ENV: tuple[str, ...] = _every_name_of(
    set(CONSUMER_FIXED_ENV)
    | {name for s in SCHEMA for program, opt in s.feeds if program == "consumer" for name in opt.env}
)


def program_env(cfg: StackConfig, program: str) -> dict[str, str]:
    """The variables of ``program``'s options that stack settings set (``{QW_...: text}``); an option
    without a variable (the queue's deadLetterTtl) is not in it."""
    env = {}
    for s in SCHEMA:
        for prog, opt in s.feeds:
            if prog == program and opt.env:
                value = getattr(cfg, _snake(s.key))
                if value is not None:
                    env[opt.env[0]] = opt.text(value)
    return env


# -- the typed result ---------------------------------------------------------------------------


class _StackConfigBase:
    if TYPE_CHECKING:
        # The fields are generated from SCHEMA (make_dataclass below), which mypy cannot follow:
        # it sees each as Any rather than a second, hand-kept list of them.
        def __getattr__(self, name: str) -> Any: ...

    @property
    def dead_letter_queue(self) -> str:
        return self.queue_name + self.queue_policy.dead_letter_suffix

    @property
    def queue_policy(self) -> QueuePolicy:
        """The queue's policy in the queue interface's own terms."""
        return QueuePolicy(
            message_ttl=self.message_ttl,
            claim_ttl=self.claim_ttl,
            claim_grace=self.claim_grace,
            max_claims=self.max_claims,
            dead_letter_ttl=self.dead_letter_ttl,
        )


_PY_TYPES = {STRING: str, INTEGER: int, NUMBER: float, BOOLEAN: bool, LIST: tuple, MAP: Mapping}

#: The validated settings of one stack; one field per setting, named as its key in snake case
#: (generated from :data:`SCHEMA`, so a setting cannot be declared without its field).
if TYPE_CHECKING:

    class StackConfig(_StackConfigBase):
        def __init__(self, **fields: Any) -> None: ...
else:
    StackConfig = dataclasses.make_dataclass(
        "StackConfig",
        [(re.sub(r"(?<!^)([A-Z])", r"_\1", s.key).lower(), _PY_TYPES[s.type]) for s in SCHEMA],
        bases=(_StackConfigBase,),
        frozen=True,
    )
    StackConfig.__module__ = __name__


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def load(raw: Mapping[str, Any], secret_keys: Sequence[str] = ()) -> StackConfig:
    """Type and validate ``raw`` (key -> value, without the project prefix).

    ``secret_keys`` lists the keys the user stored with ``--secret``; a secret setting stored in
    plain text is refused so it never sits readable in ``Pulumi.<stack>.yaml``.
    """
    unknown = sorted(set(raw) - set(SETTINGS))
    if unknown:
        key = unknown[0]
        close = [k for k in SETTINGS if k.lower() == key.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(key, raw[key], "a known setting" + hint + "; known: " + ", ".join(sorted(SETTINGS)))
    values: dict[str, Any] = {}
    for s in SCHEMA:
        if s.key in raw and raw[s.key] is not None:
            if s.secret and raw[s.key] not in ("", "{}", {}) and s.key not in secret_keys:
                raise ConfigError(
                    s.key,
                    "<plain text>",
                    f"a secret: set it with "
                    f"`pulumi config set --secret {s.key} ...` (or --path for one entry)",
                )
            values[s.key] = s.coerce(raw[s.key])
        elif s.required:
            raise ConfigError(s.key, None, f"{s.allowed()}; it is required: `pulumi config set {s.key} ...`")
        else:
            values[s.key] = s.default
    validate(values)
    if values["desiredSize"] == -1:
        values["desiredSize"] = values["minSize"]
    for key in ("monitorFlavor", "amqpBrokerFlavor"):
        if not values[key]:
            values[key] = values["flavor"]
    fields = {_snake(k): v for k, v in values.items()}
    for name in ("ssh_cidrs", "credential_roles"):
        fields[name] = tuple(fields[name])
    return StackConfig(**fields)


def validate(v: Mapping[str, Any]) -> None:
    """Rules that join several settings (each single value is already in range)."""
    lo, hi, want = v["minSize"], v["maxSize"], v["desiredSize"]
    if lo > hi:
        raise ConfigError("minSize", lo, f"at most maxSize ({hi})")
    if want != -1 and not lo <= want <= hi:
        raise ConfigError("desiredSize", want, f"from minSize ({lo}) to maxSize ({hi})")
    if hi < 1:
        raise ConfigError("maxSize", hi, "at least 1: a group that may hold no server does no work")
    _validate_policy(v)
    _validate_amqp(v)
    if v["scaleUpStep"] > hi:
        raise ConfigError("scaleUpStep", v["scaleUpStep"], f"at most maxSize ({hi})")
    if v["rollingBatchSize"] > hi:
        raise ConfigError("rollingBatchSize", v["rollingBatchSize"], f"at most maxSize ({hi})")
    if v["deadLetterTtl"] < v["messageTtl"] and v["maxClaims"] > 0:
        raise ConfigError(
            "deadLetterTtl",
            v["deadLetterTtl"],
            f"at least messageTtl ({v['messageTtl']}): dead letters must outlive live ones",
        )
    overlap = set(v["consumerEnv"]) & set(v["consumerSecretEnv"])
    if overlap:
        raise ConfigError(
            "consumerSecretEnv", "<secret>", f"keys not also in consumerEnv ({sorted(overlap)})"
        )
    reserved = set(v["consumerEnv"]) | set(v["consumerSecretEnv"])
    clash = reserved & set(RESERVED_ENV)
    if clash:
        raise ConfigError(
            "consumerEnv",
            sorted(clash),
            "names the stack does not set itself: " + ", ".join(sorted(RESERVED_ENV)),
        )
    QueuePolicy(
        message_ttl=v["messageTtl"],
        claim_ttl=v["claimTtl"],
        claim_grace=v["claimGrace"],
        max_claims=v["maxClaims"],
        dead_letter_ttl=v["deadLetterTtl"],
    ).validate()


AMQP_KEYS = (
    "amqpUrl",
    "amqpManagementUrl",
    "amqpConsumerUser",
    "amqpConsumerPassword",
    "amqpMonitorUser",
    "amqpMonitorPassword",
)


# The settings of the broker server (amqpBroker server), each away from its default only with it.
BROKER_SERVER_KEYS = ("amqpBrokerImage", "amqpBrokerFlavor", "amqpBrokerVolumeSize")


def _validate_amqp(v: Mapping[str, Any]) -> None:
    """The broker settings go with queueBackend amqp, and each per-role user with its password;
    the broker server's settings with amqpBroker server, which makes its own URL and users."""
    server = v["amqpBroker"] == "server"
    if not server or v["queueBackend"] != "amqp":
        moved = [k for k in BROKER_SERVER_KEYS if v[k] != SETTINGS[k].default]
        if moved:
            raise ConfigError(
                moved[0],
                v[moved[0]],
                f"its default unless amqpBroker is 'server' (it is {v['amqpBroker']!r})",
            )
    if v["queueBackend"] != "amqp":
        given = [k for k in AMQP_KEYS if v[k]]
        if server:
            given.insert(0, "amqpBroker")
        if given:
            raise ConfigError(
                given[0],
                v[given[0]],
                f"{'its default, existing,' if given[0] == 'amqpBroker' else 'empty'} unless queueBackend is 'amqp' "
                f"(it is {v['queueBackend']!r})",
            )
        return
    if server:
        given = [k for k in AMQP_KEYS if v[k]]
        if given:
            raise ConfigError(
                given[0],
                v[given[0]],
                "empty with amqpBroker 'server': the stack makes the broker's URL, its TLS certificate "
                "and its users (set amqpBroker 'existing' to use the broker amqpUrl names)",
            )
        if v["deadLetterTtl"] != SETTINGS["deadLetterTtl"].default:
            raise ConfigError(
                "deadLetterTtl",
                v["deadLetterTtl"],
                f"its default ({SETTINGS['deadLetterTtl'].default}) with amqpBroker 'server': the broker "
                "server declares its queues with `ensure`, which has no option for it",
            )
        return
    if v["amqpBroker"] == "existing" and not v["amqpUrl"]:
        raise ConfigError(
            "amqpUrl",
            "",
            "an amqp:// or amqps:// URL: queueBackend amqp with amqpBroker "
            "'existing' needs the broker's URL (`pulumi config set --secret amqpUrl amqps://...`)",
        )
    for role in ("Consumer", "Monitor"):
        user, password = v[f"amqp{role}User"], v[f"amqp{role}Password"]
        if bool(user) != bool(password):
            missing = f"amqp{role}Password" if user else f"amqp{role}User"
            raise ConfigError(missing, "", f"set together with amqp{role}{'User' if user else 'Password'}")


def _validate_policy(v: Mapping[str, Any]) -> None:
    """The chosen policy's own rules (workload/autoscale/policy.py), on the stack's values, named
    by stack key: the stack refuses what the monitor would refuse at its start."""
    from workload.autoscale.monitor import POLICY_CONFIGS
    from workload.autoscale.policy import PolicyConfigError

    cls = next(c for c in POLICY_CONFIGS if c.__name__.lower().startswith(v["scalingPolicy"]))
    keys = {opt.name: s.key for s in SCHEMA for prog, opt in s.feeds if prog == "monitor"}
    fields = {f.name for f in dataclasses.fields(cls)}
    try:
        cls(**{name: v[key] for name, key in keys.items() if name in fields}).validate()
    except PolicyConfigError as exc:
        key = keys.get(exc.key, exc.key)
        allowed = re.sub(r"[a-z_]+(?= \()", lambda m: keys.get(m.group(0), m.group(0)), exc.allowed)
        raise ConfigError(key, exc.value, allowed) from None


def from_pulumi() -> StackConfig:
    """Load the running stack's config (``pulumi config``) and validate it."""
    from pulumi.runtime import config as rc

    prefix = PROJECT + ":"
    raw, secrets = {}, []
    for full, value in rc.CONFIG.get().items():
        if full.startswith(prefix):
            key = full[len(prefix) :]
            raw[key] = value
            if rc.is_config_secret(full):
                secrets.append(key)
    return load(raw, secrets)


def _shown_default(s: Setting) -> str:
    if s.required:
        return "required"
    if s.option is not None:
        return s.option.text(s.default) if s.default is not None else "unset"
    return json.dumps(s.default)


def document(markdown: bool = False) -> str:
    """The schema as a table (`python -m infra settings`; ``markdown``: the README's table)."""
    if markdown:
        head = ["| key | type | default | what it is; what is allowed |", "|---|---|---|---|"]
        return "\n".join(head + [_md_row(s) for s in SCHEMA])
    return "\n".join(
        f"{s.key:24} {s.type:8} {_shown_default(s):28} {s.description}; {s.allowed()}" for s in SCHEMA
    )


def _md_row(s: Setting) -> str:
    text = f"{s.description}; {s.allowed()}".replace("|", "\\|")
    return f"| `{s.key}` | {s.type} | `{_shown_default(s)}` | {text} |"

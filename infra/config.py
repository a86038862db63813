"""Every setting of a stack, declared once, typed and validated before any resource exists.

The schema follows Heat's ``properties_schema`` style: one :class:`Setting` per key with its type,
constraints, default and description; :func:`validate` holds the rules that join several keys.
:func:`load` is pure (a mapping of raw strings in, a :class:`StackConfig` out) so every error can be
tested without Pulumi; :func:`from_pulumi` feeds it the stack's config.

Every error is a :class:`ConfigError` naming the key, the value and what is allowed, e.g.::

    queue-workers:maxSize = '0' is not allowed: an integer from 1 to 1000
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from typing import Any, Callable, Mapping, Sequence

from workload.queues.base import (
    CLAIM_GRACE_RANGE,
    CLAIM_TTL_RANGE,
    MESSAGE_TTL_RANGE,
    QueuePolicy,
)

PROJECT = "queue-workers"

# Setting types (the names Heat's schema uses).
STRING, INTEGER, BOOLEAN, LIST, MAP = "string", "integer", "boolean", "list", "map"

_REQUIRED = object()


class ConfigError(ValueError):
    """A setting's value is not allowed. Names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        shown = "<secret>" if key in SECRET_KEYS else repr(value)
        super().__init__(f"{PROJECT}:{key} = {shown} is not allowed: {allowed}")


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
QUEUE_NAME = Pattern(r"[A-Za-z0-9_-]{1,60}", "1 to 60 letters, digits, '_' or '-' (Zaqar's queue-name rule, "
                     "leaving room for the '-dlq' suffix)")
URL = Pattern(r"https?://[^\s/]+(/\S*)?", "an http(s) URL")
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

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def allowed(self) -> str:
        kind = {STRING: "a string", INTEGER: "an integer", BOOLEAN: "true or false",
                LIST: "a list", MAP: "a map"}[self.type]
        parts = [kind] + [c.describe() for c in self.constraints]
        if self.item_constraints:
            parts.append("each item " + ", ".join(c.describe() for c in self.item_constraints))
        if self.key_constraints:
            parts.append("keys " + ", ".join(c.describe() for c in self.key_constraints))
        return " ".join(parts)

    def coerce(self, raw: Any) -> Any:
        """Turn the raw config value (Pulumi hands every value over as a string) into its type."""
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
            if self.type == MAP:
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


S = Setting
SCHEMA: tuple[Setting, ...] = (
    # where
    S("cloud", STRING, "Entry of clouds.yaml the provider, the queue provider and `fab` use", _REQUIRED, (NAME,)),
    S("region", STRING, "OpenStack region of this stack", _REQUIRED, (NAME,)),
    S("identityEndpoint", STRING, "Keystone v3 URL the servers authenticate against; default: the cloud's auth_url "
      "from clouds.yaml", "", (Check(lambda v: v == "" or URL.ok(v), "an http(s) URL or empty"),)),
    # servers
    S("flavor", STRING, "Nova flavor of the consumer servers", _REQUIRED, (NAME,)),
    S("monitorFlavor", STRING, "Nova flavor of the monitor server; default: flavor", "",
      (Check(lambda v: v == "" or NAME.ok(v), "a flavor name or empty"),)),
    S("network", STRING, "Neutron network (name or id) the servers attach to", _REQUIRED, (NAME,)),
    S("keyPair", STRING, "Nova key pair for SSH to the servers; empty: none", "",
      (Check(lambda v: v == "" or NAME.ok(v), "a key pair name or empty"),)),
    S("serverName", STRING, "Prefix of the servers' names (the seed's -s)", "qw-worker",
      (Pattern(r"[a-z0-9][a-z0-9-]{0,40}", "1 to 41 lower-case letters, digits or '-'"),)),
    S("sshCidrs", LIST, "Networks allowed to SSH to the servers; empty: no ingress at all", [],
      item_constraints=(CIDR,)),
    # template image
    S("templateImageName", STRING, "Template the image was baked from (`fab bake-template`: the image is named "
      "<name>-v<version>-<time> and carries qw_template_name=<name>, qw_bake_state=complete)",
      "queue-workers-consumer", (NAME,)),
    S("templateImageProperties", MAP, "Further Glance properties the template image must carry, e.g. "
      "qw_template_version", {}, key_constraints=(Pattern(r"[A-Za-z0-9_.:-]{1,255}", "property names"),)),
    # group size
    S("minSize", INTEGER, "Fewest consumer servers (the seed's -m)", 1, (Range(0, 1000),)),
    S("maxSize", INTEGER, "Most consumer servers (the seed's -x)", 10, (Range(1, 1000),)),
    S("desiredSize", INTEGER, "Consumer servers at creation; default: minSize", -1, (Range(-1, 1000),)),
    S("rollingBatchSize", INTEGER, "Servers replaced at once when the template image changes", 1, (Range(1, 100),)),
    S("rollingPause", INTEGER, "Seconds between rolling-update batches", 30, (Range(0, 3600),)),
    # scaling
    S("scalingPolicy", STRING, "How the monitor decides: threshold (the seed's) or target (backlog per worker)",
      "threshold", (AllowedValues(("threshold", "target")),)),
    S("scaleUpThreshold", INTEGER, "threshold: free messages above which the group grows (the seed's -j)", 100,
      (Range(1, 10_000_000),)),
    S("scaleDownThreshold", INTEGER, "threshold: free messages below which the group shrinks (the seed's -n)", 10,
      (Range(0, 10_000_000),)),
    S("targetWait", INTEGER, "target: seconds from post to start of processing to keep under", 30,
      (Range(1, 86400),)),
    S("scaleUpStep", INTEGER, "Servers added by one scale-up signal", 1, (Range(1, 100),)),
    S("scaleDownStep", INTEGER, "Servers removed by one scale-down signal", 1, (Range(1, 100),)),
    S("scaleUpCooldown", INTEGER, "Seconds after a scale-up, the stack's creation or an update during which Heat takes no scaling signal (Heat keeps one cooldown per group; the seed's -c)", 300,
      (Range(0, 86400),)),
    S("scaleDownCooldown", INTEGER, "Seconds after a scale-down during which Heat takes no scaling signal, up or down (one cooldown per group)", 600,
      (Range(0, 86400),)),
    S("monitorInterval", INTEGER, "Seconds between the monitor's looks at the queue (the seed's -t)", 30,
      (Range(5, 3600),)),
    S("monitorEnabled", BOOLEAN, "Run the monitor on its own server; false: run `python -m workload monitor` "
      "wherever you like", True),
    # queue
    S("queueBackend", STRING, "Queue service (the stack creates Zaqar queues)", "zaqar", (AllowedValues(("zaqar",)),)),
    S("queueName", STRING, "Work queue name; its dead-letter queue is <name>-dlq", "jobs", (QUEUE_NAME,)),
    S("messageTtl", INTEGER, "Seconds a message lives in the queue", 3600, (Range(*MESSAGE_TTL_RANGE),)),
    S("deadLetterTtl", INTEGER, "Seconds a message lives in the dead-letter queue", 1209600,
      (Range(*MESSAGE_TTL_RANGE),)),
    S("claimTtl", INTEGER, "Seconds a consumer holds a claim before renewing", 300, (Range(*CLAIM_TTL_RANGE),)),
    S("claimGrace", INTEGER, "Seconds a claimed message outlives its claim", 60, (Range(*CLAIM_GRACE_RANGE),)),
    S("maxClaims", INTEGER, "Claims before a message moves to the dead-letter queue; 0: never", 5,
      (Range(0, 1000),)),
    # consumer
    S("handler", STRING, "What a consumer runs per message: exec:<command>, python:<module:function> or "
      "http:<url>", "exec:cat", (Pattern(r"(exec|python|http):\S.*", "exec:<command>, python:<pkg.mod:func> or "
                                                                      "http:<url>"),)),
    S("consumerConcurrency", INTEGER, "Messages one consumer server handles at once (its -w)", 1,
      (Range(1, 256),)),
    S("consumerEnv", MAP, "Extra QW_* settings written to every consumer's env file", {},
      item_constraints=(ONE_LINE,), key_constraints=(ENV_NAME,)),
    S("consumerSecretEnv", MAP, "Extra QW_* settings that are secrets (set with --secret)", {},
      item_constraints=(ONE_LINE,), key_constraints=(ENV_NAME,), secret=True),
    # credentials
    S("credentialRoles", LIST, "Roles the application credentials carry", ["member"], item_constraints=(NAME,)),
    S("credentialExpiresAt", STRING, "When the application credentials expire (ISO 8601); empty: never", "",
      (Check(lambda v: v == "" or _is_iso_time(v), "an ISO 8601 time such as 2027-01-01T00:00:00Z, or empty"),)),
    S("stackTimeout", INTEGER, "Minutes Heat may take to create or update the worker group", 60, (Range(1, 1440),)),
)
SETTINGS: dict[str, Setting] = {s.key: s for s in SCHEMA}
SECRET_KEYS = frozenset(s.key for s in SCHEMA if s.secret)


# -- the typed result ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StackConfig:
    """The validated settings of one stack. Field names are the keys in snake case."""

    cloud: str
    region: str
    identity_endpoint: str
    flavor: str
    monitor_flavor: str
    network: str
    key_pair: str
    server_name: str
    ssh_cidrs: tuple[str, ...]
    template_image_name: str
    template_image_properties: Mapping[str, str]
    min_size: int
    max_size: int
    desired_size: int
    rolling_batch_size: int
    rolling_pause: int
    scaling_policy: str
    scale_up_threshold: int
    scale_down_threshold: int
    target_wait: int
    scale_up_step: int
    scale_down_step: int
    scale_up_cooldown: int
    scale_down_cooldown: int
    monitor_interval: int
    monitor_enabled: bool
    queue_backend: str
    queue_name: str
    message_ttl: int
    dead_letter_ttl: int
    claim_ttl: int
    claim_grace: int
    max_claims: int
    handler: str
    consumer_concurrency: int
    consumer_env: Mapping[str, str]
    consumer_secret_env: Mapping[str, str]
    credential_roles: tuple[str, ...]
    credential_expires_at: str
    stack_timeout: int

    @property
    def dead_letter_queue(self) -> str:
        return self.queue_name + self.queue_policy.dead_letter_suffix

    @property
    def queue_policy(self) -> QueuePolicy:
        """The queue's policy in the queue interface's own terms."""
        return QueuePolicy(message_ttl=self.message_ttl, claim_ttl=self.claim_ttl, claim_grace=self.claim_grace,
                           max_claims=self.max_claims, dead_letter_ttl=self.dead_letter_ttl)


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
                raise ConfigError(s.key, "<plain text>", f"a secret: set it with "
                                  f"`pulumi config set --secret {s.key} ...` (or --path for one entry)")
            values[s.key] = s.coerce(raw[s.key])
        elif s.required:
            raise ConfigError(s.key, None, f"{s.allowed()}; it is required: `pulumi config set {s.key} ...`")
        else:
            values[s.key] = s.default
    validate(values)
    if values["desiredSize"] == -1:
        values["desiredSize"] = values["minSize"]
    if not values["monitorFlavor"]:
        values["monitorFlavor"] = values["flavor"]
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
    if v["scalingPolicy"] == "threshold" and v["scaleDownThreshold"] >= v["scaleUpThreshold"]:
        raise ConfigError("scaleDownThreshold", v["scaleDownThreshold"],
                          f"less than scaleUpThreshold ({v['scaleUpThreshold']}), or the group would flap")
    if v["scaleUpStep"] > hi:
        raise ConfigError("scaleUpStep", v["scaleUpStep"], f"at most maxSize ({hi})")
    if v["rollingBatchSize"] > hi:
        raise ConfigError("rollingBatchSize", v["rollingBatchSize"], f"at most maxSize ({hi})")
    if v["deadLetterTtl"] < v["messageTtl"] and v["maxClaims"] > 0:
        raise ConfigError("deadLetterTtl", v["deadLetterTtl"],
                          f"at least messageTtl ({v['messageTtl']}): dead letters must outlive live ones")
    overlap = set(v["consumerEnv"]) & set(v["consumerSecretEnv"])
    if overlap:
        raise ConfigError("consumerSecretEnv", "<secret>", f"keys not also in consumerEnv ({sorted(overlap)})")
    reserved = set(v["consumerEnv"]) | set(v["consumerSecretEnv"])
    from infra.hot import RESERVED_ENV  # the names the stack writes itself

    clash = reserved & set(RESERVED_ENV)
    if clash:
        raise ConfigError("consumerEnv", sorted(clash), "names the stack does not set itself: "
                          + ", ".join(sorted(RESERVED_ENV)))
    QueuePolicy(message_ttl=v["messageTtl"], claim_ttl=v["claimTtl"], claim_grace=v["claimGrace"],
                max_claims=v["maxClaims"], dead_letter_ttl=v["deadLetterTtl"]).validate()


def from_pulumi() -> StackConfig:
    """Load the running stack's config (``pulumi config``) and validate it."""
    from pulumi.runtime import config as rc

    prefix = PROJECT + ":"
    raw, secrets = {}, []
    for full, value in rc.CONFIG.get().items():
        if full.startswith(prefix):
            key = full[len(prefix):]
            raw[key] = value
            if rc.is_config_secret(full):
                secrets.append(key)
    return load(raw, secrets)


def document() -> str:
    """The schema as a table (used by the README and `python -m infra settings`)."""
    rows = []
    for s in SCHEMA:
        default = "required" if s.required else json.dumps(s.default)
        rows.append(f"{s.key:24} {s.type:8} {default:28} {s.description}; {s.allowed()}")
    return "\n".join(rows)

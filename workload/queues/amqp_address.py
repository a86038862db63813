"""Where an AMQP broker is and who we are there, without ever showing the password.

Three sources, the first that names a broker wins: the ``url`` given (``--amqp-url``),
``$QW_AMQP_URL``, then a clouds.yaml-like file (``$QW_AMQP_CONFIG``, else ``./amqp.yaml``,
``~/.config/queue-workers/amqp.yaml``, ``/etc/queue-workers/amqp.yaml``)::

    brokers:
      prod:                                   # chosen by $QW_AMQP_BROKER (needed if several)
        url: amqps://broker.example:5671/jobs
        user: worker                          # else the URL's
        password: s3cret                      # keep the file 0600
        management_url: https://broker.example:15671
        cafile: /etc/ssl/certs/private-ca.pem # added to the URL as ?cafile=

A private CA may also travel in the URL itself, ``?cadata=`` (base64 of its DER form; the stack's
broker server hands its consumers and monitor that). AMQP and the management API verify with it.

``$QW_AMQP_USER`` / ``$QW_AMQP_PASSWORD`` override the credentials of any source.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

from workload.queues.base import InvalidInput

SCHEMES = ("amqp", "amqps")
CONFIG_PATHS = ("amqp.yaml", "~/.config/queue-workers/amqp.yaml", "/etc/queue-workers/amqp.yaml")
URL_FORM = "amqp://USER:PASSWORD@HOST:PORT/VHOST or amqps://..."

# Variables read here besides the CLI's options: credentials and the broker file (never options,
# so that no password is ever on a command line).
CREDENTIAL_ENV = ("QW_AMQP_USER", "QW_AMQP_PASSWORD", "QW_AMQP_CONFIG", "QW_AMQP_BROKER")


@dataclasses.dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is and who we are. ``str()`` hides the password."""

    url: str  # as given, credentials folded in
    scheme: str
    host: str
    port: int
    vhost: str
    user: str
    password: str = dataclasses.field(repr=False)
    management_url: str = ""

    def __str__(self) -> str:
        return f"{self.scheme}://{quote(self.user, safe='')}:***@{self.host}:{self.port}/{quote(self.vhost, safe='')}"

    __repr__ = __str__


def parse_url(
    url: str | None, management_url: str | None = None, environ: Mapping[str, str] | None = None
) -> BrokerAddress:
    """Check an AMQP URL and fold in credentials from ``QW_AMQP_USER``/``QW_AMQP_PASSWORD``;
    raise :class:`InvalidInput` (naming the URL without its password) if it is not usable."""
    environ = os.environ if environ is None else environ
    if not url or not isinstance(url, str):
        raise InvalidInput(
            "amqp url",
            url,
            f"{URL_FORM} (--amqp-url, QW_AMQP_URL, or a broker in amqp.yaml / QW_AMQP_CONFIG)",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput("amqp url", _mask(url), f"a valid URL ({exc})") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise InvalidInput("amqp url", _mask(url), URL_FORM)
    user = environ.get("QW_AMQP_USER") or unquote(parts.username or "") or "guest"
    password = environ.get("QW_AMQP_PASSWORD") or unquote(parts.password or "") or "guest"
    tls = parts.scheme == "amqps"
    port = port or (5671 if tls else 5672)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    host = parts.hostname
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}"
    full = urlunsplit((parts.scheme, netloc, "/" + quote(vhost, safe=""), parts.query, ""))
    mgmt = (
        management_url
        or environ.get("QW_AMQP_MANAGEMENT_URL")
        or f"{'https' if tls else 'http'}://{host}:{15671 if tls else 15672}"
    ).rstrip("/")
    return BrokerAddress(full, parts.scheme, host, port, vhost, user, password, mgmt)


def tls_verify(address: BrokerAddress) -> str | bool:
    """What an https call to the broker's management API verifies its certificate against: the URL's
    ``?cafile=``, else its ``?cadata=`` (base64 of the CA's DER form, as aiormq reads it for AMQP)
    written once to a file, else the system CAs (True)."""
    query = parse_qs(urlsplit(address.url).query)
    if query.get("cafile"):
        return query["cafile"][0]
    if query.get("cadata"):
        return _ca_file(query["cadata"][0])
    return True


@functools.lru_cache(maxsize=8)
def _ca_file(cadata: str) -> str:
    import base64
    import ssl
    import tempfile

    try:
        pem = ssl.DER_cert_to_PEM_cert(base64.b64decode(cadata, validate=True))
    except ValueError:
        raise InvalidInput("amqp url", "?cadata=...", "base64 of a CA certificate's DER form") from None
    fd, path = tempfile.mkstemp(prefix="qw-amqp-ca-", suffix=".pem")
    with os.fdopen(fd, "w") as f:
        f.write(pem)
    return path


def _mask(url: str) -> str:
    return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def config_file(environ) -> Path | None:
    """The broker config file in use: ``$QW_AMQP_CONFIG`` (must exist), else the first found."""
    named = environ.get("QW_AMQP_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise InvalidInput("QW_AMQP_CONFIG", named, "the path of an existing amqp.yaml")
        return path
    return next((p for p in (Path(c).expanduser() for c in CONFIG_PATHS) if p.is_file()), None)


def from_config(environ) -> dict | None:
    """The chosen ``brokers`` entry of the config file (None without a file)."""
    import yaml

    path = config_file(environ)
    if path is None:
        return None
    try:
        brokers = (yaml.safe_load(path.read_text()) or {}).get("brokers") or {}
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        raise InvalidInput(f"{path}", "(unreadable)", f"YAML with a 'brokers' mapping ({exc})") from None
    name = environ.get("QW_AMQP_BROKER") or (next(iter(brokers)) if len(brokers) == 1 else None)
    if name not in brokers or not isinstance(brokers[name], dict):
        raise InvalidInput(
            "QW_AMQP_BROKER",
            name,
            f"one of the brokers in {path}: {', '.join(map(str, brokers)) or '(none)'}",
        )
    return brokers[name]


def resolve(
    url: str | None, management_url: str | None = None, environ: Mapping[str, str] | None = None
) -> BrokerAddress:
    """The broker address from ``url``, ``$QW_AMQP_URL`` or the config file (see the module)."""
    environ = os.environ if environ is None else environ
    url = url or environ.get("QW_AMQP_URL")
    if url:
        return parse_url(url, management_url, environ)
    entry = from_config(environ)
    if entry is None:
        return parse_url(None, management_url, environ)  # the error naming every source
    cfg_url = entry.get("url")
    if cfg_url and entry.get("cafile"):
        cfg_url += ("&" if "?" in cfg_url else "?") + "cafile=" + quote(str(entry["cafile"]), safe="/")
    env = {
        "QW_AMQP_USER": str(entry.get("user") or ""),
        "QW_AMQP_PASSWORD": str(entry.get("password") or ""),
        **{k: v for k, v in environ.items() if k in ("QW_AMQP_USER", "QW_AMQP_PASSWORD") and v},
    }
    return parse_url(
        cfg_url, management_url or entry.get("management_url") or environ.get("QW_AMQP_MANAGEMENT_URL"), env
    )

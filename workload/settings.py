"""Command-line options that also read environment variables (for containers and systemd units).

Every option of the workload CLI is declared through :func:`option`: its default comes from its
environment variable when that is set, and its ``--help`` text names the variable. An environment
value that does not parse is refused with a message naming the variable, the value and what is
allowed. Credentials are not options here: they come the OpenStack way (``clouds.yaml`` with
``OS_CLOUD``, or ``OS_*`` variables), or the AWS way for the SQS backend.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Callable

BACKENDS = ("zaqar", "sqs", "amqp")
DEFAULT_QUEUE = "jobs"


class SettingError(ValueError):
    """An environment variable holds a value its option does not accept."""


def env_flag(value: str) -> bool:
    """Parse a boolean environment value (1/0, true/false, yes/no, on/off)."""
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: an integer of at least 1")
    return n


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: an integer of at least 0")
    return n


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    x = float(text)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: a number above 0")
    return x


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    x = float(text)
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: a number of at least 0")
    return x


def env_default(env: str | tuple[str, ...], default: Any, type: Callable[[str], Any] | None,
                environ: dict[str, str] | None = None) -> Any:
    """The value of the first set variable in ``env`` converted by ``type``, else ``default``."""
    environ = os.environ if environ is None else environ
    for name in (env,) if isinstance(env, str) else env:
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        try:
            return type(raw) if type else raw
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise SettingError(f"environment variable {name}={raw!r} is not allowed: {exc}") from None
    return default


def option(parser: argparse._ActionsContainer, *flags: str, env: str | tuple[str, ...],
           help: str, default: Any = None, type: Callable[[str], Any] | None = None,
           flag: bool = False, **kw: Any) -> argparse.Action:
    """Add an option whose default is read from ``env``; its help names the variable.

    ``flag=True`` makes a ``store_true`` switch whose variable takes 1/0, true/false, yes/no.
    """
    names = (env,) if isinstance(env, str) else env
    shown = " or ".join(f"${n}" for n in names)
    if flag:
        value = env_default(env, bool(default), env_flag)
        return parser.add_argument(*flags, action="store_true", default=value,
                                   help=f"{help} [env {shown}]", **kw)
    value = env_default(env, default, type)
    choices = kw.get("choices")
    if choices is not None and value not in (default, *choices):  # argparse checks only the command line
        set_name = next(n for n in names if os.environ.get(n))
        raise SettingError(f"environment variable {set_name}={value!r} is not allowed: "
                           f"one of {', '.join(map(str, choices))}")
    suffix = f" (default: {default})" if default not in (None, "", [], ()) else ""
    return parser.add_argument(*flags, default=value, type=type,
                               help=f"{help}{suffix} [env {shown}]", **kw)


def add_queue_options(parser: argparse.ArgumentParser, queue_required: bool = True) -> None:
    """Options naming the queue and how to reach it; shared by every mode."""
    g = parser.add_argument_group("queue service")
    option(g, "-q", "--queue", "--queue_name", dest="queue", env="QW_QUEUE", default=DEFAULT_QUEUE,
           help="name of the work queue; its dead-letter queue is this name plus '-dlq'")
    option(g, "-b", "--backend", env=("QW_QUEUE_BACKEND", "QW_BACKEND"), default="zaqar",
           choices=BACKENDS, help="queue service: zaqar (OpenStack Messaging v2), sqs or amqp (RabbitMQ)")
    option(g, "--zaqar-url", env="QW_ZAQAR_URL",
           help="Zaqar endpoint, e.g. http://127.0.0.1:8888; unset: the 'messaging' endpoint of "
                "the cloud's catalog (needs OpenStack credentials)")
    option(g, "--project", "--zaqar-project", dest="project", env="QW_ZAQAR_PROJECT",
           help="project id sent as X-Project-ID to a Zaqar without Keystone (local servers)")
    option(g, "--os-cloud", env="OS_CLOUD",
           help="cloud name in clouds.yaml for Keystone credentials; OS_* variables also work")
    option(g, "-r", "--region", "--region_name", dest="region", env=("QW_REGION", "OS_REGION_NAME"),
           help="region of the queue service (OpenStack region, or AWS region for sqs)")
    option(g, "--sqs-endpoint", env=("QW_SQS_ENDPOINT_URL", "QW_SQS_ENDPOINT", "AWS_ENDPOINT_URL_SQS"),
           help="SQS endpoint URL (e.g. a local moto server); unset: AWS's own")
    option(g, "--amqp-url", env="QW_AMQP_URL",
           help="AMQP broker URL for amqp, amqp://USER:PASSWORD@HOST:PORT/VHOST or amqps://...; "
                "QW_AMQP_USER / QW_AMQP_PASSWORD override the URL's credentials (never logged)")
    option(g, "--amqp-management-url", env="QW_AMQP_MANAGEMENT_URL",
           help="RabbitMQ management API for amqp (stats, policies); unset: the broker host on "
                "15672 (15671 for amqps)")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Logging options shared by every mode."""
    g = parser.add_argument_group("output")
    option(g, "-d", "--debug", env="QW_DEBUG", flag=True,
           help="debug logging on stderr (requests to the queue service, timings)")
    option(g, "--log-file", env="QW_LOG_FILE",
           help="append JSON-lines logs to this file instead of stdout")


def queue_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword options for :func:`workload.queues.open_queue` from parsed arguments."""
    if args.backend == "zaqar":
        opts = {"url": args.zaqar_url, "project": args.project, "cloud": args.os_cloud,
                "region": args.region}
    elif args.backend == "amqp":
        opts = {"url": args.amqp_url, "management_url": args.amqp_management_url}
        if getattr(args, "concurrency", None):  # the consumer: the broker pushes what it keeps in hand
            opts["prefetch"] = min(1000, args.concurrency + (args.batch if args.prefetch is None else args.prefetch))
    else:
        opts = {"endpoint_url": args.sqs_endpoint, "region": args.region}
    return {k: v for k, v in opts.items() if v not in (None, "")}


def open_queue(args: argparse.Namespace, name: str | None = None):
    """Open the queue the arguments name (or ``name`` on the same service)."""
    from workload.queues import open_queue as _open

    return _open(args.backend, name or args.queue, **queue_options(args))

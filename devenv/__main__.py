"""``python -m devenv zaqar|sqs|amqp|controlplane|demo|cloud-demo``: local stand-ins for the cloud, in the foreground."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any


def _serve(service, name: str) -> int:
    """Start ``service``, print how to reach it, wait for Ctrl-C or SIGTERM, stop it."""
    stop = threading.Event()
    # SIGINT too: a shell that starts us in the background ignores SIGINT, so no KeyboardInterrupt.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        service.start()
    except Exception as exc:  # a clear line, not a traceback, for a user at the terminal
        print(f"{name}: could not start: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"{name} listening on {service.url}")
        print("export the following to point the workload at it:")
        for key, value in service.env().items():
            print(f"export {key}={value}")
        print("Ctrl-C stops it.", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print(f"stopping {name}...", flush=True)
        service.stop()
    print(f"{name} stopped")
    return 0


def _zaqar(args) -> int:
    from devenv.zaqar import LocalZaqar

    return _serve(
        LocalZaqar(
            venv=args.venv,
            project=args.project,
            gc_interval=args.gc_interval,
            workers=args.workers,
            threads=args.threads,
        ),
        "zaqar",
    )


def _sqs(args) -> int:
    from devenv.sqs import LocalSQS

    return _serve(LocalSQS(region=args.region, port=args.port), "sqs")


def _amqp(args) -> int:
    from devenv.rabbitmq import LocalRabbitMQ

    return _serve(
        LocalRabbitMQ(
            data_dir=args.data_dir, consumer_timeout=args.consumer_timeout, heartbeat=args.heartbeat
        ),
        "amqp",
    )


# The services run here, one entry each: name, help, description, options (flags and
# add_argument's keywords) and the function that runs it. Adding one is one more entry.
@dataclasses.dataclass(frozen=True)
class ServiceCommand:
    name: str
    help: str
    description: str
    options: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]
    run: Callable[[argparse.Namespace], int]


SERVICE_COMMANDS = (
    ServiceCommand(
        "zaqar",
        help="run a real local Zaqar 23 (redis storage, no auth) until Ctrl-C",
        description="Run a real Zaqar 23 with redis on free 127.0.0.1 ports in the "
        "foreground; print its URL and the environment variables for the workload.",
        options=(
            (
                ("--venv",),
                dict(default=None, help="Zaqar virtualenv (default: $QW_ZAQAR_VENV or <repo>/.venv-zaqar)"),
            ),
            (
                ("--project",),
                dict(
                    default="queue-workers-local",
                    help="project id clients send as X-Project-ID (default: %(default)s)",
                ),
            ),
            (
                ("--gc-interval",),
                dict(
                    type=float,
                    default=2.0,
                    metavar="SECONDS",
                    help="seconds between runs of the redis driver's garbage collection of expired "
                    "messages and claims (default: %(default)s)",
                ),
            ),
            (
                ("--workers",),
                dict(type=int, default=2, help="gunicorn worker processes (default: %(default)s)"),
            ),
            (("--threads",), dict(type=int, default=4, help="threads per worker (default: %(default)s)")),
        ),
        run=_zaqar,
    ),
    ServiceCommand(
        "sqs",
        help="run moto's SQS server on loopback until Ctrl-C",
        description="Run moto's SQS-compatible server on 127.0.0.1 in the foreground; "
        "print its endpoint URL and the environment variables for the workload.",
        options=(
            (("--region",), dict(default="us-east-1", help="AWS region clients name (default: %(default)s)")),
            (("--port",), dict(type=int, default=None, help="port to listen on (default: a free one)")),
        ),
        run=_sqs,
    ),
    ServiceCommand(
        "amqp",
        help="run a real RabbitMQ node (management plugin on) on loopback until Ctrl-C",
        description="Run Debian's rabbitmq-server as a node of its own on free 127.0.0.1 "
        "ports (AMQP, management API, distribution, epmd) in the foreground; print the "
        "management URL and the environment variables for the workload.",
        options=(
            (
                ("--data-dir",),
                dict(
                    default=None,
                    help="folder for mnesia, logs and config, kept after stop (default: a temporary one)",
                ),
            ),
            (
                ("--consumer-timeout",),
                dict(
                    type=int,
                    default=1800,
                    metavar="SECONDS",
                    help="seconds a delivery may stay unacknowledged before the broker closes its "
                    "channel (RabbitMQ's consumer_timeout; default: %(default)s)",
                ),
            ),
            (
                ("--heartbeat",),
                dict(
                    type=int,
                    default=60,
                    metavar="SECONDS",
                    help="heartbeat interval the broker proposes (default: %(default)s)",
                ),
            ),
        ),
        run=_amqp,
    ),
)

# Commands whose options are their own module's: everything after the command name goes to it
# (argparse here would eat their --help). Imported only when asked for. Name: (module, help).
PASS_THROUGH = {
    "demo": ("devenv.demo", "the whole loop locally: Zaqar, producer, monitor, autoscaled consumers"),
    "cloud-demo": (
        "devenv.cloud_demo",
        "the whole loop on the local cloud: bake, deploy, backlog, scale up, drain, "
        "scale down, destroy, with a live view",
    ),
    "controlplane": (
        "devenv.controlplane",
        "a real Keystone + Heat (+ Zaqar with Keystone auth) on loopback, with a clouds.yaml, until Ctrl-C",
    ),
}


def _pass_through(command: str, argv: list[str]) -> int:
    import importlib

    return importlib.import_module(PASS_THROUGH[command][0]).main(argv) or 0


def _add_service(sub, command: ServiceCommand) -> None:
    """The subcommand of one service: its options, and the function that runs it."""
    p = sub.add_parser(command.name, help=command.help, description=command.description)
    for flags, kwargs in command.options:
        p.add_argument(*flags, **kwargs)
    p.set_defaults(func=command.run)


def _add_pass_through(sub, command: str, text: str) -> None:
    """A subcommand listed in the help whose own module parses its arguments (see main())."""
    p = sub.add_parser(
        command,
        help=text,
        add_help=False,
        description=f"{text}. Options after `{command}` go to it "
        f"(`python -m devenv {command} --help` lists them).",
    )
    p.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help=f"arguments for {command} itself (see `python -m devenv {command} --help`)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per service, then those that pass their arguments on."""
    parser = argparse.ArgumentParser(
        prog="python -m devenv",
        description="Local stand-ins for the cloud services queue-workers uses (loopback only).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SERVICE_COMMANDS:
        _add_service(sub, command)
    for name, (_module, text) in PASS_THROUGH.items():
        _add_pass_through(sub, name, text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in PASS_THROUGH:
        return _pass_through(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

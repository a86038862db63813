"""``python -m workload MODE`` / ``queue-workers MODE``: producer, consumer, monitor, status,
redrive, purge, delete, ensure.

Every option also reads an environment variable (shown in ``--help``), for containers. The seed
demo's short options keep their meaning where one exists here (-q queue, -t interval, -r region,
-d debug; the monitor's -x -m -j -n -c -g -l -i -s).

The ``monitor`` mode belongs to :mod:`workload.autoscale.monitor` (``add_arguments(parser)``
and ``run(args) -> int``). The options are declared once, on the configs they fill
(workload/settings.py); every one is checked before any network call.

Exit codes (workload/exit_codes.py): 0 success (the consumer: stopped by SIGTERM/SIGINT,
--max-messages or --idle-exit); 1 unexpected failure; 2 bad option, environment value or handler;
3 the queue service refused (queue missing, credentials refused, or unreachable after retries; the
consumer does not give up on an unreachable service: it logs an ``error`` line and tries again
with backoff).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from workload import settings
from workload.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_QUEUE, EXIT_USAGE  # noqa: F401 (re-exported)
from workload.handlers import DONE, Handler, Result
from workload.queues.base import MAX_POST_MESSAGES
from workload.settings import option

MODES = ("producer", "consumer", "monitor", "status", "redrive", "purge", "delete", "ensure")


class UsageError(Exception):
    """A bad combination of options; exit 2 with the message."""


# -- parser -------------------------------------------------------------------------------------
def _interval_option(
    group: argparse._ActionsContainer, help: str, *, lo_open: bool = False, default: float | None = None
) -> None:
    """The seed's -t (also --interval, --time_interval; $QW_INTERVAL): seconds, which each mode
    that has it times something else with (``help`` says what)."""
    option(
        group,
        "-t",
        "--interval",
        "--time_interval",
        dest="interval",
        env="QW_INTERVAL",
        type=float,
        lo=0,
        lo_open=lo_open,
        default=default,
        help=help,
    )


def _producer_options(p: argparse.ArgumentParser) -> None:
    _pace_options(p.add_argument_group("pace and length"))
    _payload_options(p.add_argument_group("payloads (default: generated widget requests)"))


def _pace_options(g: argparse._ArgumentGroup) -> None:
    pace = g.add_mutually_exclusive_group()
    option(
        pace,
        "--rate",
        env="QW_RATE",
        type=float,
        lo=0,
        help="messages per second (0 = idle); unset with no -t: as fast as the service takes them",
    )
    _interval_option(pace, "seconds between messages (the seed's pace; --rate 1/T)", lo_open=True)
    option(
        g, "--count", env="QW_COUNT", type=int, lo=0, help="stop after this many messages (unset: no limit)"
    )
    option(
        g,
        "--duration",
        env="QW_DURATION",
        type=float,
        lo=0,
        help="stop after this many seconds (unset: no limit)",
    )
    option(
        g,
        "--batch",
        env="QW_BATCH",
        type=int,
        lo=1,
        hi=MAX_POST_MESSAGES,
        default=10,
        help="most messages per post (low rates post each message when due)",
    )
    option(
        g,
        "--progress-every",
        env="QW_PROGRESS_EVERY",
        type=float,
        lo=0,
        default=5.0,
        help="seconds between progress lines on stderr; 0 = none",
    )


def _payload_options(g: argparse._ArgumentGroup) -> None:
    src = g.add_mutually_exclusive_group()
    option(
        src,
        "--file",
        env="QW_PAYLOAD_FILE",
        help="post one payload per line of this file (JSON, else the text); '-' = stdin",
    )
    option(
        src, "--stdin", env="QW_PAYLOAD_STDIN", flag=True, help="post one payload per line read from stdin"
    )
    option(
        src,
        "--widget-id",
        env="QW_WIDGET_ID",
        help="post widget requests all with this widget id (the seed's --widget-id)",
    )
    option(
        g,
        "--invalid-share",
        env="QW_INVALID_SHARE",
        type=float,
        lo=0,
        hi=1,
        default=0.0,
        help="fraction of generated widget requests whose widget id is invalid (poison)",
    )
    option(
        g,
        "--work-s",
        env="QW_WORK_S",
        type=float,
        lo=0,
        help="seconds of work each generated request asks for (body field work_s)",
    )
    option(g, "--seed", env="QW_SEED", type=int, help="random seed for generated payloads")


def _consumer_options(p: argparse.ArgumentParser) -> None:
    from workload.consumer import ConsumerConfig

    g = p.add_argument_group("handler (default: sleep -t seconds, or the body's work_s, per message)")
    h = g.add_mutually_exclusive_group()
    option(
        h,
        "--exec",
        dest="exec_cmd",
        env="QW_EXEC",
        help="program run per message: body on stdin, exit 0 = done, else retry; stdout = reply. "
        "Also: put the command after '--'",
    )
    option(
        h,
        "--python",
        env="QW_PYTHON",
        help="python handler package.module:function; returns the reply, raises to retry "
        "(workload.handlers.Reject = dead-letter now)",
    )
    option(h, "--http", env="QW_HTTP", help="URL to POST each body to; 2xx = done, else retry")
    _interval_option(
        g, "without a handler: seconds each message's work takes (the seed's claim-to-delete time)"
    )
    p.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="exec handler as trailing arguments: consumer [options] -- PROGRAM [ARGS...]",
    )
    g = p.add_argument_group("claiming")
    settings.add_options(g, ConsumerConfig)
    option(
        g,
        "--reply-queue",
        env="QW_REPLY_QUEUE",
        help="post each handler's reply to this queue (the seed's response queue)",
    )


def _ensure_options(p: argparse.ArgumentParser) -> None:
    option(
        p,
        "--ensure",
        env="QW_ENSURE",
        flag=True,
        help="create the queue and its dead-letter queue first (policy options of 'ensure')",
    )
    settings.add_options(p.add_argument_group("queue policy (with --ensure)"), settings.QueuePolicyOptions)


def _add_mode(sub: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """One subcommand, with the queue options and the common (output) options every mode has."""
    p = sub.add_parser(name, help=help, description=description)
    settings.add_queue_options(p)
    settings.add_common_options(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI: one subcommand per mode, each with the queue and output options."""
    parser = argparse.ArgumentParser(
        prog="queue-workers",
        description="Producer, consumer, monitor and queue administration for queue-workers. "
        "Every option also reads the environment variable shown in its help.",
        epilog="Exit codes: 0 ok; 1 unexpected failure; 2 bad option or environment value; "
        "3 the queue service refused (queue missing, credentials, unreachable; the consumer "
        "instead keeps retrying an unreachable service). "
        "Credentials: clouds.yaml with OS_CLOUD, or OS_* variables (OpenStack); AWS_* for sqs; "
        "QW_AMQP_URL (or QW_AMQP_USER/QW_AMQP_PASSWORD) for amqp.",
    )
    sub = parser.add_subparsers(dest="mode", metavar="MODE", required=True)
    _worker_modes(sub)
    _admin_modes(sub)
    return parser


def _worker_modes(sub: Any) -> None:
    """producer, consumer and monitor: the modes that run until told to stop."""
    p = _add_mode(
        sub,
        "producer",
        "post messages at a rate",
        "Post messages to the queue at a rate, in "
        "batches; progress on stderr; a JSON summary on stdout at the end. Each body carries "
        "seq, produced_at and producer.",
    )
    _producer_options(p)
    _ensure_options(p)

    p = _add_mode(
        sub,
        "consumer",
        "claim messages and run a handler on each",
        "Claim messages, run a handler on each, delete done ones, retry or dead-letter "
        "failing ones. JSON-lines log, one line per message, a summary line at the end. "
        "SIGTERM/SIGINT: stop claiming, drain, release, exit 0.",
    )
    _consumer_options(p)
    _ensure_options(p)

    p = _add_mode(
        sub,
        "monitor",
        "scale the consumer group on the queue's depth",
        "Watch the queue and scale the consumer group between --min and --max.",
    )
    from workload.autoscale import monitor

    monitor.add_arguments(p)


def _admin_modes(sub: Any) -> None:
    """status, redrive, purge, delete and ensure: one administrative act on the queue."""
    p = _add_mode(
        sub,
        "status",
        "show queue depth",
        "Free, claimed, total and oldest age of the queue and of its dead-letter queue.",
    )
    option(p, "--watch", env="QW_WATCH", flag=True, help="repeat every -t seconds until interrupted")
    _interval_option(p, "seconds between looks with --watch", lo_open=True, default=5.0)
    option(p, "--json", dest="as_json", env="QW_JSON", flag=True, help="one JSON object per look")

    p = _add_mode(
        sub,
        "redrive",
        "move dead-lettered messages back to the queue",
        "Move messages from the dead-letter queue back to the queue: post first, then "
        "delete, so none is ever lost.",
    )
    option(p, "--count", env="QW_COUNT", type=int, lo=1, help="move at most this many (default: all)")

    p = _add_mode(sub, "purge", "delete every message of the queue", "Delete every message of the queue.")
    option(p, "--dead-letter", env="QW_PURGE_DEAD_LETTER", flag=True, help="also purge the dead-letter queue")

    p = _add_mode(
        sub,
        "delete",
        "delete the queue and its dead-letter queue",
        "Delete the queue and its dead-letter queue, messages included.",
    )
    p.add_argument("--yes", action="store_true", help="really delete (required; no environment variable)")

    p = _add_mode(
        sub,
        "ensure",
        "create the queue and its dead-letter queue with a policy",
        "Create the queue and its dead-letter queue, or update their policy.",
    )
    settings.add_options(p.add_argument_group("queue policy"), settings.QueuePolicyOptions)


# -- modes ----------------------------------------------------------------------------------------
def _emit(args: argparse.Namespace, record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


@contextlib.contextmanager
def _log_stream(args: argparse.Namespace):
    if args.log_file:
        with open(args.log_file, "a", encoding="utf-8", buffering=1) as f:
            yield f
    else:
        yield sys.stdout


def _queue_policy(args: argparse.Namespace):
    return settings.from_args(settings.QueuePolicyOptions, args).policy()


def _on_signals(stop: Callable[[], None]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop())


def run_producer(args: argparse.Namespace) -> int:
    from workload import admin
    from workload import producer as prod

    queue = settings.open_queue(args)
    if args.ensure:
        admin.ensure(queue, _queue_policy(args))
    if args.file:
        payloads = prod.file_payloads(args.file)
    elif args.stdin:
        payloads = prod.lines_from(sys.stdin)
    elif args.widget_id:
        extra = {"work_s": args.work_s} if args.work_s else {}
        payloads = iter(lambda: {"widget_id": args.widget_id, "action": "create", **extra}, None)
    else:
        payloads = prod.widget_requests(args.invalid_share, args.work_s, args.seed)
    rate = args.rate if args.rate is not None else (1.0 / args.interval if args.interval else None)
    p = prod.Producer(
        queue,
        payloads,
        rate=rate,
        count=args.count,
        duration=args.duration,
        batch=args.batch,
        progress_every=args.progress_every,
    )
    _on_signals(p.stop)
    summary = p.run()
    with _log_stream(args) as out:
        line = json.dumps(summary.as_dict())
        out.write(line + "\n")
        if out is not sys.stdout:
            print(line, flush=True)
    return EXIT_OK if summary.failed == 0 else EXIT_QUEUE


def make_consumer_handler(args: argparse.Namespace):
    """The handler the consumer options ask for."""
    from workload.handlers import make_handler

    command = list(args.command or [])
    if command and command[0] == "--":
        command = command[1:]
    chosen = [
        k for k, v in (("exec", args.exec_cmd or command), ("python", args.python), ("http", args.http)) if v
    ]
    if len(chosen) > 1:
        raise UsageError(f"choose one handler, not {' and '.join(chosen)}")
    try:
        if args.exec_cmd:
            return make_handler("exec", args.exec_cmd)
        if command:
            return make_handler("exec", command)
        if args.python:
            return make_handler("python", args.python)
        if args.http:
            return make_handler("http", args.http)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.interval:
        return _FixedSleep(args.interval)
    return make_handler("python", "workload.handlers.builtin:sleep")


class _FixedSleep(Handler):
    """The seed's consumer: every message takes ``seconds`` of work, then is deleted."""

    kind = "sleep"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def handle(self, message, ctx):
        time.sleep(self.seconds)
        return Result(DONE)

    def describe(self) -> str:
        return f"sleep {self.seconds:g}s"


def run_consumer(args: argparse.Namespace) -> int:
    from workload import admin
    from workload.consumer import Consumer, ConsumerConfig, FatalQueueError, JsonLog

    handler = make_consumer_handler(args)
    config = settings.from_args(ConsumerConfig, args)
    try:
        config.validate()
        settings.BACKEND_REGISTRY[args.backend].check_limits(
            settings.declared(ConsumerConfig), dataclasses.asdict(config)
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    queue = settings.open_queue(args)
    if args.ensure:
        admin.ensure(queue, _queue_policy(args))
    reply = settings.open_queue(args, args.reply_queue) if args.reply_queue else None
    with _log_stream(args) as out:
        try:
            consumer = Consumer(queue, handler, config, reply_queue=reply, log=JsonLog(out))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        _on_signals(consumer.stop)
        watch = _watch_for_drain(consumer, config)
        try:
            summary = consumer.run()
        except FatalQueueError as exc:
            print(f"consumer: {exc}", file=sys.stderr)
            return EXIT_QUEUE
        finally:
            if watch:
                watch.stop()
        if watch and consumer.stopped_by == "drain" and config.drained_file:
            # only now: every claim is settled or released, nothing is held any more
            with open(config.drained_file, "w") as fh:
                fh.write(json.dumps({"drained_at": time.time(), "deadline": watch.asked}) + "\n")
    if args.log_file:
        print(json.dumps({"event": "summary", **summary}), flush=True)
    return EXIT_OK


def _watch_for_drain(consumer, config):
    """The drain protocol's consumer side (workload.drain_request): a drain request stops the
    consumer the way SIGTERM does, unless it is called off while handlers still run; None without
    ``--drain-watch``."""
    if not config.drain_watch:
        return None
    from workload.drain_request import DrainWatch

    def drain(deadline: float) -> None:
        consumer.log("drain", consumer=consumer.consumer_id, deadline=deadline)
        consumer.drain()

    def called_off() -> None:
        taken = consumer.undrain()
        consumer.log("drain-called-off", consumer=consumer.consumer_id, taken_back=taken)

    def unreachable(error: str) -> None:
        consumer.log("error", consumer=consumer.consumer_id, error=error, fatal=False)

    return DrainWatch(drain, url=config.drain_watch, on_error=unreachable, on_cancel=called_off).start()


def run_monitor(args: argparse.Namespace) -> int:
    from workload.autoscale import monitor

    return int(monitor.run(args) or 0)


def run_status(args: argparse.Namespace) -> int:
    from workload import admin

    queue = settings.open_queue(args)
    if args.watch:
        stopped = []
        _on_signals(lambda: stopped.append(True))
        admin.watch_status(queue, args.interval, args.as_json, should_stop=lambda: bool(stopped))
        return EXIT_OK
    status = admin.queue_status(queue)
    print(json.dumps(status) if args.as_json else admin.format_status(status), flush=True)
    return EXIT_OK


def run_redrive(args: argparse.Namespace) -> int:
    from workload import admin

    _emit(args, admin.redrive(settings.open_queue(args), count=args.count, progress=sys.stderr))
    return EXIT_OK


def run_purge(args: argparse.Namespace) -> int:
    from workload import admin

    _emit(args, admin.purge(settings.open_queue(args), dead_letter=args.dead_letter))
    return EXIT_OK


def run_delete(args: argparse.Namespace) -> int:
    from workload import admin

    if not args.yes:
        raise UsageError(
            f"deleting queue {args.queue!r} and its dead-letter queue loses their "
            "messages: add --yes to do it"
        )
    _emit(args, admin.delete(settings.open_queue(args)))
    return EXIT_OK


def run_ensure(args: argparse.Namespace) -> int:
    from workload import admin

    try:
        _emit(args, admin.ensure(settings.open_queue(args), _queue_policy(args)))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


RUNNERS = {
    "producer": run_producer,
    "consumer": run_consumer,
    "monitor": run_monitor,
    "status": run_status,
    "redrive": run_redrive,
    "purge": run_purge,
    "delete": run_delete,
    "ensure": run_ensure,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``queue-workers`` and ``python -m workload``; returns the exit code."""
    try:
        parser = build_parser()
    except settings.SettingError as exc:
        print(f"queue-workers: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from workload.queues.base import InvalidInput, QueueError

    try:
        return RUNNERS[args.mode](args)
    except (UsageError, InvalidInput) as exc:
        print(f"queue-workers {args.mode}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except QueueError as exc:
        print(f"queue-workers {args.mode}: queue service: {exc}", file=sys.stderr)
        return EXIT_QUEUE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

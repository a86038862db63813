"""The monitor: observe the queue and the group, ask the policy, apply through the actuator.

``python -m workload monitor`` (see :func:`add_arguments` for every option). Each look at the
queue is one JSON line in the decision log::

    {"ts": ..., "event": "decision", "observation": {...}, "group": {...},
     "decision": {"desired", "action", "reason", "estimates"}, "result": {...} | null,
     "error": null | "..."}

Safe answers: when the queue stats or the group size cannot be read, the policy is told so and
holds the capacity (it never scales to zero on missing data) and the monitor backs off
(interval x 2^failures, at most ``--max-backoff``); while the actuator reports an update in
progress (a Heat stack UPDATE_IN_PROGRESS) no new action is taken; SIGTERM / SIGINT stop the loop
between looks (the local actuator's consumers are then stopped with SIGTERM, so their claims go
back to the queue).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from workload.autoscale.actuator import Actuator, ActuatorError
from workload.heartbeat import Heartbeat
from workload.autoscale.policy import (
    Decision, Observation, Policy, PolicyConfigError, PolicyState, TargetConfig, TargetPolicy,
    ThresholdConfig, ThresholdPolicy)
from workload.queues.base import QueueDriver, QueueError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class Monitor:
    """One queue, one policy, one actuator, looked at every ``interval`` seconds.

    :param log: called with every record (a dict); default: JSON lines on stdout.
    :param dry_run: decide and log, never apply.
    :param clock: monotonic seconds (the policy's ``now``); replaceable in tests.
    :param heartbeat: touched after every look that read the queue and the group, and while
        waiting for the next look after one (see workload/heartbeat.py); None: no heartbeat.
    """

    def __init__(self, queue: QueueDriver, policy: Policy, actuator: Actuator, *,
                 interval: float = 10.0, max_backoff: float = 300.0, dry_run: bool = False,
                 log: Callable[[dict[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, heartbeat: Heartbeat | None = None):
        if not interval > 0:
            raise ValueError(f"interval={interval!r} is not allowed: a number of seconds above 0")
        self.queue, self.policy, self.actuator = queue, policy, actuator
        self.interval, self.max_backoff = interval, max(interval, max_backoff)
        self.dry_run = dry_run
        self.log = log or _print_json
        self.clock = clock
        self.heartbeat = heartbeat
        self.state = PolicyState()
        self.failures = 0
        self.decisions = 0
        self.actions = 0
        self.last: dict[str, Any] | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        """Stop after the current look (signal-safe)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def step(self) -> dict[str, Any]:
        """One look: observe, decide, apply; return (and log) the decision record."""
        errors = []
        try:
            stats = self.queue.stats()
        except QueueError as exc:
            stats = None
            errors.append(f"queue: {exc}")
        try:
            group = self.actuator.observe()
        except ActuatorError as exc:
            group = None
            errors.append(f"actuator: {exc}")
        obs = Observation(now=self.clock(), stats=stats,
                          current=group.current if group else None,
                          pending=group.pending if group else 0)
        result = None
        if group is not None and group.updating:
            decision = Decision(group.current, "hold: the group is still carrying out an earlier "
                                "change", self.state, group.current)
        else:
            decision = self.policy.decide(obs, self.state)
            self.state = decision.state
            if decision.action != "hold" and not self.dry_run:
                try:
                    applied = self.actuator.apply(decision.desired, decision.reason)
                    self.actions += 1
                    result = dataclasses.asdict(applied) | {"changed": applied.changed}
                except ActuatorError as exc:
                    errors.append(f"actuator: {exc}")
        self.failures = self.failures + 1 if errors else 0
        self.decisions += 1
        record = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "event": "decision", "policy": self.policy.name,
            "observation": obs.as_dict(),
            "group": dataclasses.asdict(group) if group else None,
            "decision": decision.as_dict(), "result": result,
            "error": "; ".join(errors) or None,
        }
        if self.dry_run and decision.action != "hold":
            record["result"] = {"dry_run": True}
        self.last = record
        self.log(record)
        if self.heartbeat and not errors:
            self.heartbeat.beat()
        return record

    def next_wait(self) -> float:
        """Seconds to the next look: the interval, doubled per consecutive failure, capped."""
        if not self.failures:
            return self.interval
        return min(self.max_backoff, self.interval * 2 ** min(self.failures, 20))

    def run(self, iterations: int | None = None) -> int:
        """Look until stopped (or ``iterations`` looks); return the number of looks."""
        n = 0
        while not self._stop.is_set():
            began = self.clock()
            self.step()
            n += 1
            if iterations is not None and n >= iterations:
                break
            self._wait(max(0.0, self.next_wait() - (self.clock() - began)))
        return n

    def _wait(self, seconds: float) -> None:
        """Wait for the next look (or a stop); beat meanwhile if the last look worked."""
        beating = self.heartbeat is not None and not self.failures
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            if beating:
                self.heartbeat.beat()
            left = end - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, self.heartbeat.every) if beating else left)


def _print_json(record: dict[str, Any]) -> None:
    print(json.dumps(record, default=str), flush=True)


# ---------------------------------------------------------------------------- command line

def _num(kind, lo: float, hi: float | None = None, none_word: str | None = None):
    """argparse type: a number in [lo, hi]; ``none_word`` (e.g. 'never') gives None."""
    def parse(text: str):
        if none_word and text.strip().lower() == none_word:
            return None
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if v < lo or (hi is not None and v > hi):
            rng = f"from {lo:g} to {hi:g}" if hi is not None else f"of at least {lo:g}"
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: a number {rng}"
                                             + (f" or '{none_word}'" if none_word else ""))
        return v
    return parse


def _opt(group, *flags, env: str, help: str, default=None, type=None, **kw):
    """An option whose default also comes from an environment variable (named in --help)."""
    from workload.settings import option
    return option(group, *flags, env=env, help=help, default=default, type=type, **kw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the monitor's options (the queue and output options are already on ``parser``)."""
    t = TargetConfig()
    g = parser.add_argument_group("scaling (the seed's options)")
    _opt(g, "--policy", env="QW_POLICY", choices=("target", "threshold"),
         help="target: size the group for --target-wait from backlog, arrival rate, throughput "
              "and boot time; threshold: the seed's one step on -j/-n (default: threshold when "
              "-j or -n is given, else target)")
    _opt(g, "-t", "--interval", "--time_interval", dest="interval", env="QW_INTERVAL",
         type=_num(float, 0.1), default=10.0, help="seconds between looks at the queue")
    _opt(g, "-x", "--max", dest="max", env="QW_MAX", type=_num(int, 0, 10000), default=2,
         help="most consumer servers in the group")
    _opt(g, "-m", "--min", dest="min", env="QW_MIN", type=_num(int, 0, 10000), default=0,
         help="fewest consumer servers in the group (target policy with 0: scale to zero when idle)")
    _opt(g, "-j", "--scale-up-threshold", "--scale_up_threshold", dest="scale_up",
         env="QW_SCALE_UP", type=_num(int, 0),
         help="threshold policy: free messages above which one --step is added (seed default 100)")
    _opt(g, "-n", "--scale-down-threshold", "--scale_dn_threshold", dest="scale_down",
         env="QW_SCALE_DOWN", type=_num(int, 0),
         help="threshold policy: free messages at or below which one --step is removed (seed default 0)")
    _opt(g, "-c", "--cooldown", "--cool_down", dest="cooldown", env="QW_COOLDOWN",
         type=_num(float, 0), default=60.0,
         help="threshold policy: seconds after a change before the next (both directions)")
    _opt(g, "--up-cooldown", env="QW_UP_COOLDOWN", type=_num(float, 0),
         help="threshold policy: seconds after a scale-up before the next scale-up (default -c)")
    _opt(g, "--down-cooldown", env="QW_DOWN_COOLDOWN", type=_num(float, 0),
         help="threshold policy: seconds after any change before a scale-down (default -c)")
    _opt(g, "--step", env="QW_STEP", type=_num(int, 1), default=1,
         help="threshold policy: servers added or removed per change")

    g = parser.add_argument_group("target policy")
    _opt(g, "--target-wait", env="QW_TARGET_WAIT", type=_num(float, 0.1), default=t.target_wait_s,
         help="seconds from post to start of processing to keep under, at --wait-quantile")
    _opt(g, "--wait-quantile", env="QW_WAIT_QUANTILE", type=_num(float, 0.5, 0.999),
         default=t.wait_quantile, help="share of messages that should start within --target-wait")
    _opt(g, "--boot-time", env="QW_BOOT_TIME", type=_num(float, 0), default=t.boot_time_s,
         help="seconds from asking for a server to it consuming")
    _opt(g, "--service-time", env="QW_SERVICE_TIME", type=_num(float, 0.001),
         default=t.service_time_s,
         help="first estimate of seconds one message takes; observed drains correct it")
    _opt(g, "--worker-concurrency", env="QW_WORKER_CONCURRENCY", type=_num(int, 1),
         default=t.concurrency, help="messages one consumer server handles at once (its -w)")
    _opt(g, "--max-step-up", env="QW_MAX_STEP_UP", type=_num(int, 1), default=t.max_step_up,
         help="most servers added by one decision")
    _opt(g, "--max-step-down", env="QW_MAX_STEP_DOWN", type=_num(int, 1), default=t.max_step_down,
         help="most servers removed by one decision")
    _opt(g, "--down-window", env="QW_DOWN_WINDOW", type=_num(float, 0),
         default=t.scale_down_window_s,
         help="scale down only to the highest need seen over this many seconds")
    _opt(g, "--idle-to-zero", env="QW_IDLE_TO_ZERO", type=_num(float, 0, none_word="never"),
         default=t.idle_to_zero_s,
         help="with -m 0: seconds of empty queue before scaling to zero ('never': zero as soon "
              "as the load is nil for a --down-window)")
    _opt(g, "--activation", env="QW_ACTIVATION", type=_num(int, 1), default=t.activation_backlog,
         help="messages waiting that wake a group scaled to zero")
    _opt(g, "--rate-smoothing", env="QW_RATE_SMOOTHING", type=_num(float, 0),
         default=t.rate_smoothing_s, help="time constant in seconds of the arrival-rate average")
    _opt(g, "--backlog-allowance", env="QW_BACKLOG_ALLOWANCE", type=_num(float, 0, 1),
         default=t.backlog_allowance,
         help="share of (arrival rate x --target-wait) left queued on purpose so servers stay busy")
    _opt(g, "--drain-time", env="QW_DRAIN_TIME", type=_num(float, 1),
         help="seconds to drain a backlog beyond the allowance in (default: target wait + boot time)")

    g = parser.add_argument_group("the loop")
    _opt(g, "--max-backoff", env="QW_MAX_BACKOFF", type=_num(float, 0), default=300.0,
         help="longest wait between looks after queue or actuator errors (interval doubles per error)")
    _opt(g, "--iterations", env="QW_ITERATIONS", type=_num(int, 1),
         help="stop after this many looks (default: until SIGTERM/SIGINT)")
    _opt(g, "--dry-run", env="QW_DRY_RUN", flag=True, help="decide and log, never resize the group")

    g = parser.add_argument_group("actuator")
    _opt(g, "--actuator", env="QW_ACTUATOR", choices=("local", "heat"), default="local",
         help="local: consumer processes on this machine; heat: a Heat AutoScalingGroup")
    _opt(g, "-g", "--group", "--group_name", dest="group", env="QW_GROUP",
         help="scaling group: the Heat stack name when --stack is not given")
    for flags, env, what in ((("-l", "--flavor"), "QW_FLAVOR", "flavor"),
                             (("-i", "--image"), "QW_IMAGE", "image"),
                             (("-s", "--server-name", "--server_name"), "QW_SERVER_NAME", "server name")):
        _opt(g, *flags, env=env, help=f"the seed's {what} option, accepted so its command lines run; "
             "the group's template (the Pulumi stack) sets it here, so the monitor ignores it")
    _opt(g, "--consumer-args", env="QW_CONSUMER_ARGS", default="",
         help="local actuator: arguments for each 'python -m workload consumer' (shell-quoted); "
              "the monitor's queue options are added")
    _opt(g, "--consumer-log-dir", env="QW_CONSUMER_LOG_DIR", default="consumer-logs",
         help="local actuator: folder for each consumer's JSON-lines log")
    from workload.autoscale.heat import HeatActuator
    HeatActuator.add_arguments(parser)


def policy_from_args(args: argparse.Namespace) -> Policy:
    """The policy the options ask for; :class:`PolicyConfigError` names a bad key."""
    name = args.policy or ("threshold" if args.scale_up is not None or args.scale_down is not None
                           else "target")
    if name == "threshold":
        return ThresholdPolicy(ThresholdConfig(
            min_size=args.min, max_size=args.max,
            scale_up_threshold=100 if args.scale_up is None else args.scale_up,
            scale_down_threshold=0 if args.scale_down is None else args.scale_down,
            step=args.step,
            up_cooldown_s=args.cooldown if args.up_cooldown is None else args.up_cooldown,
            down_cooldown_s=args.cooldown if args.down_cooldown is None else args.down_cooldown))
    return TargetPolicy(TargetConfig(
        min_size=args.min, max_size=args.max, target_wait_s=args.target_wait,
        wait_quantile=args.wait_quantile, boot_time_s=args.boot_time,
        service_time_s=args.service_time, concurrency=args.worker_concurrency,
        max_step_up=args.max_step_up, max_step_down=args.max_step_down,
        scale_down_window_s=args.down_window, idle_to_zero_s=args.idle_to_zero,
        activation_backlog=args.activation, rate_smoothing_s=args.rate_smoothing,
        backlog_allowance=args.backlog_allowance, drain_time_s=args.drain_time))


def _queue_argv(args: argparse.Namespace) -> list[str]:
    """The monitor's queue options, passed on to local consumers."""
    out = ["--queue", args.queue, "--backend", args.backend]
    for flag, key in (("--zaqar-url", "zaqar_url"), ("--project", "project"),
                      ("--os-cloud", "os_cloud"), ("--region", "region"),
                      ("--sqs-endpoint", "sqs_endpoint")):
        value = getattr(args, key, None)
        if value:
            out += [flag, value]
    return out


def actuator_from_args(args: argparse.Namespace, sleep: Callable[[float], None] = time.sleep) -> Actuator:
    """The actuator the options name; ``sleep`` is what the Heat actuator's waits sleep with."""
    if args.actuator == "heat":
        from workload.autoscale.heat import HeatActuator
        if not getattr(args, "stack", None) and args.group:
            args.stack = args.group
        return HeatActuator.from_args(args, sleep=sleep)
    from workload.autoscale.local import LocalActuator
    return LocalActuator(_queue_argv(args) + shlex.split(args.consumer_args or ""),
                         Path(args.consumer_log_dir), min_size=0, max_size=args.max)


def run(args: argparse.Namespace) -> int:
    """``python -m workload monitor``: run the loop until SIGTERM/SIGINT or --iterations."""
    from workload import settings
    try:
        policy = policy_from_args(args)
    except PolicyConfigError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    heartbeat = Heartbeat()  # $QW_HEARTBEAT_FILE; nothing when unset
    try:
        actuator = actuator_from_args(args, sleep=heartbeat.sleep)
    except ActuatorError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    queue = settings.open_queue(args)
    out = open(args.log_file, "a", buffering=1) if getattr(args, "log_file", None) else None

    def log(record):
        line = json.dumps(record, default=str)
        (out or sys.stdout).write(line + "\n")
        (out or sys.stdout).flush()

    monitor = Monitor(queue, policy, actuator, interval=args.interval,
                      max_backoff=args.max_backoff, dry_run=args.dry_run, log=log, heartbeat=heartbeat)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: monitor.stop())
    log({"event": "start", "policy": policy.name,
         "config": dataclasses.asdict(policy.config), "interval": args.interval,
         "actuator": args.actuator, "queue": args.queue})
    try:
        looks = monitor.run(args.iterations)
    finally:
        if args.actuator == "local":
            actuator.close()
    log({"event": "summary", "looks": looks, "actions": monitor.actions})
    if out:
        out.close()
    return EXIT_OK

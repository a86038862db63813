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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workload import settings
from workload.autoscale.actuator import Actuator, ActuatorError
from workload.autoscale.policy import (
    Decision,
    Observation,
    Policy,
    PolicyConfigError,
    PolicyState,
    TargetConfig,
    TargetPolicy,
    ThresholdConfig,
    ThresholdPolicy,
)
from workload.exit_codes import EXIT_OK, EXIT_USAGE
from workload.heartbeat import Heartbeat
from workload.queues.base import QueueDriver, QueueError
from workload.settings import Setting, add_options, declared, setting

_SEED_IGNORED = (
    "the seed's {} option, accepted so its command lines run; the group's template (the "
    "Pulumi stack) sets it here, so the monitor ignores it"
)


class Monitor:
    """One queue, one policy, one actuator, looked at every ``interval`` seconds.

    :param log: called with every record (a dict); default: JSON lines on stdout.
    :param dry_run: decide and log, never apply.
    :param clock: monotonic seconds (the policy's ``now``); replaceable in tests.
    :param heartbeat: touched after every look that read the queue and the group, and while
        waiting for the next look after one (see workload/heartbeat.py); None: no heartbeat.
    """

    def __init__(
        self,
        queue: QueueDriver,
        policy: Policy,
        actuator: Actuator,
        *,
        interval: float = 10.0,
        max_backoff: float = 300.0,
        dry_run: bool = False,
        log: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: Heartbeat | None = None,
    ):
        if not interval > 0:
            raise ValueError(settings.not_allowed("interval", interval, "a number of seconds above 0"))
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
        obs = Observation(
            now=self.clock(),
            stats=stats,
            current=group.current if group else None,
            booting=group.booting if group else 0,
        )
        result = None
        if group is not None and group.updating:
            decision = Decision(
                group.current,
                "hold: the group is still carrying out an earlier change",
                self.state,
                group.current,
            )
        else:
            decision = self.policy.decide(obs, self.state)
            self.state = decision.state
            # an action other than hold has a desired size (Decision.action)
            if decision.desired is not None and decision.action != "hold" and not self.dry_run:
                try:
                    applied = self.actuator.apply(decision.desired, decision.reason)
                    self.actions += 1
                    result = dataclasses.asdict(applied) | {"changed": applied.changed}
                except ActuatorError as exc:
                    errors.append(f"actuator: {exc}")
        self.failures = self.failures + 1 if errors else 0
        self.decisions += 1
        record = {
            "ts": _now_iso(),
            "event": "decision",
            "policy": self.policy.name,
            "observation": obs.as_dict(),
            "group": dataclasses.asdict(group) if group else None,
            "decision": decision.as_dict(),
            "result": result,
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
        heartbeat = None if self.failures else self.heartbeat
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            if heartbeat is not None:
                heartbeat.beat()
            left = end - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, heartbeat.every) if heartbeat is not None else left)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _print_json(record: dict[str, Any]) -> None:
    print(json.dumps(record, default=str), flush=True)


# ---------------------------------------------------------------------------- command line


@dataclasses.dataclass(frozen=True)
class MonitorOptions:
    """The monitor's own options besides the policies' (each declared once, workload/settings.py)."""

    policy: str | None = setting(
        None,
        "target: size the group for --target-wait from backlog, arrival rate, throughput and "
        "boot time; threshold: the seed's one step on -j/-n (unset: threshold when -j or -n is "
        "given, else target)",
        flags=("--policy",),
        env=("QW_POLICY",),
        choices=("target", "threshold"),
        optional=True,
        stack="scalingPolicy",
        stack_default="target",
    )
    interval: float = setting(
        10.0,
        "seconds between looks at the queue",
        flags=("-t", "--interval", "--time_interval"),
        env=("QW_INTERVAL",),
        kind=float,
        lo=0.1,
        hi=3600,
        stack="monitorInterval",
        stack_default=30.0,
    )
    cooldown: float | None = setting(
        None,
        "threshold policy: seconds after a change before the next, both directions (default 60)",
        flags=("-c", "--cooldown", "--cool_down"),
        env=("QW_COOLDOWN",),
        kind=float,
        lo=0,
        hi=86400,
        optional=True,
    )
    max_backoff: float = setting(
        300.0,
        "longest wait between looks after queue or actuator errors (interval doubles per error)",
        flags=("--max-backoff",),
        env=("QW_MAX_BACKOFF",),
        kind=float,
        lo=0,
        hi=86400,
        stack="monitorMaxBackoff",
    )
    iterations: int | None = setting(
        None,
        "stop after this many looks (unset: until SIGTERM/SIGINT)",
        flags=("--iterations",),
        env=("QW_ITERATIONS",),
        kind=int,
        lo=1,
        optional=True,
    )
    dry_run: bool = setting(
        False,
        "decide and log, never resize the group",
        flags=("--dry-run",),
        env=("QW_DRY_RUN",),
        kind=bool,
        stack="monitorDryRun",
    )
    actuator: str = setting(
        "local",
        "local: consumer processes on this machine; heat: a Heat AutoScalingGroup",
        flags=("--actuator",),
        env=("QW_ACTUATOR",),
        choices=("local", "heat"),
    )
    group: str | None = setting(
        None,
        "scaling group: the Heat stack name when --stack is not given",
        flags=("-g", "--group", "--group_name"),
        env=("QW_GROUP",),
        optional=True,
    )
    flavor: str | None = setting(
        None, _SEED_IGNORED.format("flavor"), flags=("-l", "--flavor"), env=("QW_FLAVOR",), optional=True
    )
    image: str | None = setting(
        None, _SEED_IGNORED.format("image"), flags=("-i", "--image"), env=("QW_IMAGE",), optional=True
    )
    server_name: str | None = setting(
        None,
        _SEED_IGNORED.format("server name"),
        flags=("-s", "--server-name", "--server_name"),
        env=("QW_SERVER_NAME",),
        optional=True,
    )
    no_drain: bool = setting(
        False,
        "heat actuator: remove members at once on scale-in, without asking "
        "them to drain first (Nova's delete is a hard power-off: running handlers "
        "die and their messages come back after the claim expires)",
        flags=("--no-drain",),
        env=("QW_NO_DRAIN",),
        kind=bool,
        stack="noDrain",
    )
    drain_deadline: float = setting(
        600.0,
        "heat actuator: seconds a leaving member gets to finish what "
        "it holds before it is removed anyway (keep it above the handlers' "
        "longest job)",
        flags=("--drain-deadline",),
        env=("QW_DRAIN_DEADLINE",),
        kind=float,
        lo=1,
        hi=86400,
        stack="drainDeadline",
    )
    consumer_args: str = setting(
        "",
        "local actuator: arguments for each 'python -m workload consumer' "
        "(shell-quoted); the monitor's queue options are added",
        flags=("--consumer-args",),
        env=("QW_CONSUMER_ARGS",),
    )
    consumer_log_dir: str = setting(
        "consumer-logs",
        "local actuator: folder for each consumer's JSON-lines log",
        flags=("--consumer-log-dir",),
        env=("QW_CONSUMER_LOG_DIR",),
    )


POLICY_CONFIGS = (TargetConfig, ThresholdConfig)


def monitor_settings() -> list[Setting]:
    """Every declared setting of the monitor, each once (min/max are shared by both policies)."""
    seen: dict[str, Setting] = {}
    for cls in (MonitorOptions, *POLICY_CONFIGS):
        for s in declared(cls):
            seen.setdefault(s.name, s)
    return list(seen.values())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the monitor's options (the queue and output options are already on ``parser``).

    The policies' options are left out of the namespace when not given (argparse.SUPPRESS), so an
    option not given leaves the chosen policy's own default in place.
    """
    groups = {
        MonitorOptions: parser.add_argument_group("the loop and the actuator"),
        TargetConfig: parser.add_argument_group("target policy (and both policies' -m/-x)"),
        ThresholdConfig: parser.add_argument_group(
            "threshold policy (the seed's options; its -x default is 2)"
        ),
    }
    seen: set[str] = set()
    for cls, group in groups.items():
        fields = [s.name for s in declared(cls) if s.name not in seen]
        seen.update(fields)
        unset = None if cls is MonitorOptions else dict.fromkeys(fields, argparse.SUPPRESS)
        add_options(group, cls, only=fields, defaults=unset)
    from workload.autoscale.heat import HeatActuator

    HeatActuator.add_arguments(parser)


def _given(args: argparse.Namespace, cls) -> dict[str, Any]:
    return {s.name: getattr(args, s.name) for s in declared(cls) if hasattr(args, s.name)}


def policy_from_args(args: argparse.Namespace) -> TargetPolicy | ThresholdPolicy:
    """The policy the options ask for; :class:`PolicyConfigError` names a bad key."""
    threshold = _given(args, ThresholdConfig)
    seed_thresholds = {"scale_up_threshold", "scale_down_threshold"} & set(threshold)
    name = args.policy or ("threshold" if seed_thresholds else "target")
    if name == "threshold":
        if args.cooldown is not None:  # -c: both cooldowns unless each is given
            threshold = {"up_cooldown_s": args.cooldown, "down_cooldown_s": args.cooldown, **threshold}
        return ThresholdPolicy(ThresholdConfig(**threshold))
    return TargetPolicy(TargetConfig(**_given(args, TargetConfig)))


def actuator_from_args(
    args: argparse.Namespace,
    max_size: int,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> Actuator:
    """The actuator the options name (``max_size``: most local consumers); ``sleep`` is what the
    Heat actuator's waits sleep with; ``log`` gets the drain protocol's records (heat)."""
    if args.actuator == "heat":
        from workload.autoscale.heat import HeatActuator

        if not getattr(args, "stack", None) and args.group:
            args.stack = args.group
        heat = HeatActuator.from_args(args, sleep=sleep)
        if args.no_drain:
            return heat
        from workload.autoscale.drain_heat import DrainingActuator

        return DrainingActuator(heat, deadline_s=args.drain_deadline, log=log)
    from workload.autoscale.local import LocalActuator

    return LocalActuator(
        settings.queue_argv(args) + shlex.split(args.consumer_args or ""),
        Path(args.consumer_log_dir),
        min_size=0,
        max_size=max_size,
    )


def run(args: argparse.Namespace) -> int:
    """``python -m workload monitor``: run the loop until SIGTERM/SIGINT or --iterations."""
    try:
        policy = policy_from_args(args)
    except PolicyConfigError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    heartbeat = Heartbeat()  # $QW_HEARTBEAT_FILE; nothing when unset
    out = open(args.log_file, "a", buffering=1) if getattr(args, "log_file", None) else None

    def log(record):
        line = json.dumps(record, default=str)
        (out or sys.stdout).write(line + "\n")
        (out or sys.stdout).flush()

    try:
        actuator = actuator_from_args(
            args, policy.config.max_size, sleep=heartbeat.sleep, log=lambda r: log({"ts": _now_iso(), **r})
        )
    except ActuatorError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    queue = settings.open_queue(args)

    monitor = Monitor(
        queue,
        policy,
        actuator,
        interval=args.interval,
        max_backoff=args.max_backoff,
        dry_run=args.dry_run,
        log=log,
        heartbeat=heartbeat,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: monitor.stop())
    log(
        {
            "event": "start",
            "policy": policy.name,
            "config": dataclasses.asdict(policy.config),
            "interval": args.interval,
            "actuator": args.actuator,
            "queue": args.queue,
        }
    )
    try:
        looks = monitor.run(args.iterations)
    finally:
        if args.actuator == "local":
            actuator.close()
    log({"event": "summary", "looks": looks, "actions": monitor.actions})
    if out:
        out.close()
    return EXIT_OK

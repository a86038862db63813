"""``make demo`` / ``python -m devenv demo``: the whole loop on one machine, autoscaled.

A real local queue service (Zaqar by default; ``DEMO_BACKEND=amqp`` a real RabbitMQ, ``sqs``
moto's server); a producer following a load profile (low, ramp, burst, idle); the monitor
(the target policy, the same code as in the cloud) with the local actuator scaling consumer
processes (``python -m workload consumer``) between 0 and ``--max-workers``; a live view of queue
depth, workers, throughput and the last decision and why (one plain line every few seconds when
the output is not a terminal). At the end it stops producing, lets the consumers finish what is
queued (bounded), stops every process it started by PID, and prints one JSON object as its last
line: produced, consumed, lost, duplicates, max_workers, scale_events, p95_wait_s and more.

``DEMO_SECONDS`` (default 90, at most 120) sets its length, ``DEMO_BACKEND`` (or ``--backend``)
the queue service. The decision log and the consumers'
logs stay in ``demo-out/`` (or ``$QW_DEMO_OUT``) for reading afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from workload.settings import add_options, from_args, setting

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SECONDS, MAX_SECONDS, MIN_SECONDS = 90.0, 120.0, 15.0
BACKENDS = ("zaqar", "amqp", "sqs")


# ---------------------------------------------------------------------------- load profile


class Profile:
    """Arrival rate (messages/s) over the producing part of the demo: low, ramp, burst, idle.

    ``length`` is the producing time; the phases are fixed shares of it so a short demo has
    every phase too.
    """

    PHASES = (("low", 0.10), ("ramp", 0.25), ("burst", 0.20), ("idle", 0.45))

    def __init__(self, length: float, low: float, peak: float, burst: float):
        self.length, self.low, self.peak, self.burst = length, low, peak, burst
        self.bounds = []
        t = 0.0
        for name, share in self.PHASES:
            self.bounds.append((name, t, t + share * length))
            t += share * length

    def phase(self, t: float) -> str:
        for name, a, b in self.bounds:
            if a <= t < b:
                return name
        return "drain"

    def rate(self, t: float) -> float:
        name = self.phase(t)
        if name == "low":
            return self.low
        if name == "ramp":
            _, a, b = self.bounds[1]
            return self.low + (self.peak - self.low) * (t - a) / (b - a)
        if name == "burst":
            return self.burst
        return 0.0


# ---------------------------------------------------------------------------- consumer logs


class LogReader:
    """Follows the consumers' JSON-lines logs: done messages by seq, waits, throughput."""

    def __init__(self):
        self.offsets: dict[Path, int] = {}
        self.done: dict[int, int] = {}  # seq -> times handled with outcome done
        self.waits: dict[int, float] = {}  # seq -> wait of its first handling
        self.done_times: list[float] = []  # monotonic time we noticed each done
        self.dead_letters = 0
        self.other_outcomes: dict[str, int] = {}

    def poll(self, paths: list[Path]) -> None:
        now = time.monotonic()
        for path in paths:
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets.get(path, 0))
                    chunk = f.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n") + 1  # only whole lines; the rest is read next time
            self.offsets[path] = self.offsets.get(path, 0) + end
            for line in chunk[:end].splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("event") != "message":
                    continue
                outcome, seq = rec.get("outcome"), rec.get("seq")
                if outcome == "done" and isinstance(seq, int):
                    self.done[seq] = self.done.get(seq, 0) + 1
                    self.waits.setdefault(seq, float(rec.get("wait_s") or 0.0))
                    self.done_times.append(now)
                elif outcome == "dead-letter":
                    self.dead_letters += 1
                else:
                    self.other_outcomes[outcome] = self.other_outcomes.get(outcome, 0) + 1

    def throughput(self, window: float = 5.0) -> float:
        now = time.monotonic()
        recent = sum(1 for t in self.done_times[-2000:] if now - t <= window)
        return recent / window


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, math.ceil(0.95 * len(v)) - 1)], 3)


# ---------------------------------------------------------------------------- live view


class View:
    """One status line, redrawn in place on a terminal, printed every few seconds otherwise."""

    def __init__(self, stream=sys.stdout, plain_every: float = 5.0):
        self.stream = stream
        self.tty = stream.isatty()
        self.plain_every = plain_every
        self.last_plain = -math.inf

    def show(self, t: float, text: str, decision: str) -> None:
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns
            self.stream.write(
                "\r\x1b[2K"
                + text[: width - 1]
                + "\n\x1b[2K"
                + ("  last decision: " + decision)[: width - 1]
                + "\x1b[1A\r"
            )
            self.stream.flush()
        elif t - self.last_plain >= self.plain_every:
            self.last_plain = t
            print(f"{text} | {decision}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K\n\x1b[2K\x1b[1A\r")
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n\n")
            self.stream.flush()


# ---------------------------------------------------------------------------- the demo


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    """The demo's options, each declared once: flag, environment variable, type, range, default
    and help; workload/settings.py makes the argparse options and reads the environment from
    these, as it does for the workload's own options. :func:`parse_args` fills in what is left
    unset (``peak``, ``burst``, ``out``) and checks the length (:meth:`resolved`)."""

    # Its range is checked by resolved(), not declared here, so a refusal reads the same from
    # --seconds and DEMO_SECONDS: "demo length 600 s is not allowed: from 15 to 120 s".
    seconds: float = setting(
        DEFAULT_SECONDS,
        f"length of the demo, {MIN_SECONDS:g}..{MAX_SECONDS:g} s",
        flags=("--seconds",),
        env=("DEMO_SECONDS",),
        kind=float,
    )
    backend: str = setting(
        "zaqar",
        "queue service to run locally: zaqar (Zaqar 23 + redis), amqp (RabbitMQ) or sqs (moto)",
        flags=("--backend",),
        env=("DEMO_BACKEND",),
        choices=BACKENDS,
    )
    max_workers: int = setting(
        6, "most consumer processes the monitor may run", flags=("--max-workers",), kind=int, lo=1, hi=16
    )
    work_s: float = setting(
        0.4, "seconds of work per message", flags=("--work-s",), kind=float, lo=0.01, hi=5
    )
    peak: float | None = setting(
        None,
        "messages/s at the top of the ramp (default: what max-workers-2 handle)",
        flags=("--peak",),
        kind=float,
        optional=True,
    )
    burst: float | None = setting(
        None,
        "messages/s during the burst (default: what max-workers handle, 90%%)",
        flags=("--burst",),
        kind=float,
        optional=True,
    )
    low: float = setting(1.0, "messages/s at first", flags=("--low",), kind=float)
    interval: float = setting(1.0, "seconds between the monitor's looks", flags=("--interval",), kind=float)
    target_wait: float = setting(
        5.0, "the target policy's wait target in seconds", flags=("--target-wait",), kind=float
    )
    out: str | None = setting(
        None,
        "folder for the decision log and the consumers' logs (emptied first; "
        "default: $QW_DEMO_OUT or demo-out/)",
        flags=("--out",),
        env=("QW_DEMO_OUT",),
        optional=True,
    )

    def resolved(self) -> DemoOptions:
        """These options with the unset ones filled in: the ramp's peak and the burst from what
        the workers handle, the output folder ``demo-out/``; ValueError if the length is out of range."""
        if not MIN_SECONDS <= self.seconds <= MAX_SECONDS:
            raise ValueError(
                f"demo length {self.seconds:g} s is not allowed: from {MIN_SECONDS:g} to {MAX_SECONDS:g} s"
            )
        per_worker = 1.0 / self.work_s
        return dataclasses.replace(
            self,
            peak=self.peak if self.peak is not None else max(1.0, (self.max_workers - 2) * per_worker * 0.8),
            burst=self.burst if self.burst is not None else self.max_workers * per_worker * 0.9,
            out=self.out or str(REPO_ROOT / "demo-out"),
        )


def parse_args(argv: list[str] | None) -> DemoOptions:
    """The demo's options from ``argv`` and the environment; a bad value exits with usage (2)."""
    if argv and argv[0] == "--":  # `python -m devenv demo -- --max-workers 4`
        argv = argv[1:]
    p = argparse.ArgumentParser(
        prog="python -m devenv demo",
        description="Local Zaqar (or RabbitMQ, or moto's SQS) + producer (low, ramp, burst, idle) + monitor + autoscaled "
        "consumer processes; the last line is a JSON summary.",
    )
    try:
        add_options(p, DemoOptions)  # reads DEMO_SECONDS, DEMO_BACKEND and QW_DEMO_OUT
        return from_args(DemoOptions, p.parse_args(argv)).resolved()
    except ValueError as exc:  # SettingError too: "key=value is not allowed: what is"
        p.error(str(exc))


class Demo:
    """One run of the demo, step by step: :meth:`run` starts the service and the queue, the
    monitor and the producer, produces, drains, and returns the summary and exit code."""

    def __init__(self, args: DemoOptions):
        self.args = args
        self.out = Path(args.out)
        self.view = View()
        self.stop = threading.Event()
        self.profile = Profile(0.8 * args.seconds, args.low, args.peak, args.burst)
        self.service = None
        self.queue = self.actuator = self.monitor = self.producer = self.decisions = None
        self.queue_name = f"demo-{uuid.uuid4().hex[:8]}"
        self.produced: set[int] = set()
        self.events = {"up": 0, "down": 0}
        self.max_workers = 0
        self.reader = LogReader()
        self.last_reason = "(none yet)"
        self.notes: list[str] = []  # scale events, printed by the main thread as they happen
        self.started = time.monotonic()

    # -- the steps ------------------------------------------------------------------------------
    def run(self) -> tuple[dict[str, Any], int]:
        """Every step in order; the summary and the exit code (0 only if nothing was lost)."""
        a = self.args
        self.view.note(
            f"demo on {a.backend}: {a.seconds:g}s - producing {self.profile.length:.0f}s "
            f"(low {a.low:g}/s, ramp to {a.peak:.1f}/s, burst {a.burst:.1f}/s, idle), then "
            f"draining; {a.work_s:g}s of work per message; 0..{a.max_workers} consumers"
        )
        try:
            self.start_service()
            self.start_loop()
            self.produce()
            self.drain()
            result = self.summary()
        except Exception as exc:
            self.view.close()
            print(f"demo: failed: {exc}", file=sys.stderr)
            return self.failure(exc), 1
        finally:
            self.close()
        return result, 0 if result["lost"] == 0 else 1

    def start_service(self) -> None:
        """Start the backend's local service and make the demo's queue on it."""
        from workload.queues import open_queue
        from workload.queues.base import QueuePolicy

        self.service = local_service(self.args.backend)
        self.view.note(f"starting the local {self.args.backend} service...")
        self.service.start()
        self.queue = open_queue(self.args.backend, self.queue_name, **self.service.queue_options)
        self.queue.ensure(QueuePolicy(message_ttl=3600, claim_ttl=60, claim_grace=60, max_claims=5))
        self.view.note(
            f"{self.args.backend} at {self.service.url}, queue {self.queue_name}; logs in {self.out}"
        )

    def consumer_args(self) -> list[str]:
        """The consumers' command line (the service's address comes in their environment)."""
        return [
            "--queue",
            self.queue_name,
            "--backend",
            self.args.backend,
            "--python",
            "workload.handlers.builtin:sleep",
            "--batch",
            "1",
            "--prefetch",
            "0",
            "--concurrency",
            "1",
            "--drain-timeout",
            "10",
            "--retry-delay",
            "1",
        ]

    def start_loop(self) -> None:
        """The local actuator, the monitor (its own thread) and the producer, all started."""
        from workload.autoscale.local import LocalActuator
        from workload.autoscale.monitor import Monitor
        from workload.autoscale.policy import TargetConfig, TargetPolicy
        from workload.producer import Producer

        a = self.args
        self.actuator = LocalActuator(
            self.consumer_args(),
            self.out / "consumers",
            min_size=0,
            max_size=a.max_workers,
            stop_timeout=20,
            env=self.service.env(),
        )
        policy = TargetPolicy(
            TargetConfig(
                min_size=0,
                max_size=a.max_workers,
                target_wait_s=a.target_wait,
                boot_time_s=2.0,
                service_time_s=a.work_s,
                max_step_up=a.max_workers,
                max_step_down=2,
                scale_down_window_s=4 * a.interval,
                idle_to_zero_s=8.0,
                rate_smoothing_s=4 * a.interval,
            )
        )
        self.decisions = open(self.out / "decisions.jsonl", "w", buffering=1)
        self.monitor = Monitor(
            self.queue, policy, self.actuator, interval=a.interval, max_backoff=4.0, log=self.log_decision
        )
        self.mon_thread = threading.Thread(target=self.monitor.run, name="monitor", daemon=True)
        self.producer = Producer(
            self.queue,
            iter(lambda: {"work_s": a.work_s}, None),
            rate=self.profile.rate,
            duration=self.profile.length,
            batch=10,
            progress_every=0,
            progress=open(os.devnull, "w"),
            on_post=lambda bodies: self.produced.update(b["seq"] for b in bodies),
        )
        self.mon_thread.start()
        self.producer.start()
        self.started = time.monotonic()  # the profile's clock: the producer's start

    def log_decision(self, record: dict[str, Any]) -> None:
        """The monitor's log callback: the decision log, scale events, the last reason."""
        self.decisions.write(json.dumps(record, default=str) + "\n")
        d = record["decision"]
        r = record.get("result") or {}
        if r.get("changed"):
            way = "up" if r["after"] > r["before"] else "down"
            self.events[way] += 1
            self.notes.append(f"  scale {way} {r['before']} -> {r['after']} workers: {d['reason']}")
        if d["action"] != "hold" or record.get("error"):
            self.last_reason = f"{d['action']} -> {d['desired']}: {d['reason']}" + (
                f" [error: {record['error']}]" if record.get("error") else ""
            )

    def tick(self) -> None:
        """Read the consumers' logs and redraw the live view."""
        t = time.monotonic() - self.started
        self.reader.poll(self.actuator.log_paths())
        while self.notes:
            self.view.note(f"t={t:5.1f}s" + self.notes.pop(0))
        g = self.monitor.last or {}
        obs = (g.get("observation") or {}).get("stats") or {}
        group = g.get("group") or {}
        current = group.get("current", 0) or 0
        self.max_workers = max(self.max_workers, current)
        text = (
            f"t={t:5.1f}s {self.profile.phase(t):<5} in {self.profile.rate(t):4.1f}/s | "
            f"queue free {obs.get('free', '?'):>4} claimed {obs.get('claimed', '?'):>3} | "
            f"workers {current} ({group.get('booting', 0)} starting) | "
            f"done {len(self.reader.done):>4} at {self.reader.throughput():4.1f}/s | "
            f"produced {len(self.produced)}"
        )
        self.view.show(t, text, self.last_reason)

    def produce(self) -> None:
        """Follow the load profile until its end (or a signal), then stop the producer."""
        while not self.stop.is_set() and time.monotonic() - self.started < self.profile.length:
            self.tick()
            self.stop.wait(0.5)
        self.producer.stop()
        self.producer.join(10)
        self.view.note(
            f"producing stopped after {len(self.produced)} messages; draining what is "
            "queued and waiting for the monitor to scale the idle pool to zero..."
        )

    def drain(self) -> None:
        """Keep the monitor running (it wakes consumers for anything left) until every produced
        message was handled and the pool is at zero, bounded by the demo's length plus 15 s."""
        deadline = self.started + self.args.seconds + 15.0
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.tick()
            group = (self.monitor.last or {}).get("group") or {}
            if self.produced <= set(self.reader.done) and group.get("current") == 0:
                break
            self.stop.wait(0.5)
        self.monitor.stop()
        self.mon_thread.join(10)
        self.actuator.close()
        self.reader.poll(self.actuator.log_paths())

    def summary(self) -> dict[str, Any]:
        """The JSON summary: produced, consumed, lost, duplicates, scaling, p95 wait, ..."""
        consumed = set(self.reader.done) & self.produced
        result = {
            "backend": self.args.backend,
            "seconds": round(time.monotonic() - self.started, 1),
            "queue": self.queue_name,
            "produced": len(self.produced),
            "consumed": len(consumed),
            "lost": len(self.produced - consumed),
            "duplicates": sum(n - 1 for n in self.reader.done.values()),
            "dead_lettered": self.reader.dead_letters,
            "max_workers": self.max_workers,
            "scale_events": self.events["up"] + self.events["down"],
            "scale_ups": self.events["up"],
            "scale_downs": self.events["down"],
            "p95_wait_s": p95([self.reader.waits[s] for s in consumed]),
            "target_wait_s": self.args.target_wait,
            "monitor_looks": self.monitor.decisions,
            "logs": str(self.out),
        }
        try:
            result["left_in_queue"] = self.queue.stats().total
        except Exception as exc:  # the summary must still come out
            result["left_in_queue"] = f"unknown: {exc}"
        return result

    def failure(self, exc: Exception) -> dict[str, Any]:
        """The summary of a demo that could not finish."""
        return {
            "backend": self.args.backend,
            "error": str(exc),
            "produced": len(self.produced),
            "consumed": len(self.reader.done),
            "lost": None,
            "duplicates": None,
            "max_workers": self.max_workers,
            "scale_events": self.events["up"] + self.events["down"],
            "p95_wait_s": None,
        }

    def close(self) -> None:
        """Stop everything this run started, by PID, whatever step it reached."""
        if self.producer is not None:
            self.producer.stop()
        if self.monitor is not None:
            self.monitor.stop()
        if self.actuator is not None:
            self.actuator.close(timeout=10)
        if self.decisions is not None:
            self.decisions.close()
        if hasattr(self.queue, "close"):  # an AMQP connection: closed before its broker stops
            self.queue.close()
        if self.service is not None:
            self.service.stop()
        self.view.close()


def local_service(backend: str):
    """The local service of ``backend`` (not started): LocalZaqar, LocalSQS or LocalRabbitMQ."""
    if backend == "zaqar":
        from devenv.zaqar import LocalZaqar

        return LocalZaqar()
    if backend == "sqs":
        from devenv.sqs import LocalSQS

        return LocalSQS()
    from devenv.rabbitmq import LocalRabbitMQ

    return LocalRabbitMQ()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "consumers").mkdir(parents=True)
    demo = Demo(args)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: demo.stop.set())
    result, code = demo.run()
    print(json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

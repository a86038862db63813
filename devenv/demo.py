"""``make demo`` / ``python -m devenv demo``: the whole loop on one machine, autoscaled.

A real local Zaqar; a producer following a load profile (low, ramp, burst, idle); the monitor
(the target policy, the same code as in the cloud) with the local actuator scaling consumer
processes (``python -m workload consumer``) between 0 and ``--max-workers``; a live view of queue
depth, workers, throughput and the last decision and why (one plain line every few seconds when
the output is not a terminal). At the end it stops producing, lets the consumers finish what is
queued (bounded), stops every process it started by PID, and prints one JSON object as its last
line: produced, consumed, lost, duplicates, max_workers, scale_events, p95_wait_s and more.

``DEMO_SECONDS`` (default 90, at most 120) sets its length. The decision log and the consumers'
logs stay in ``demo-out/`` (or ``$QW_DEMO_OUT``) for reading afterwards.
"""
from __future__ import annotations

import argparse
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

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SECONDS, MAX_SECONDS, MIN_SECONDS = 90.0, 120.0, 15.0


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
            self.stream.write("\r\x1b[2K" + text[:width - 1] + "\n\x1b[2K" +
                              ("  last decision: " + decision)[:width - 1] + "\x1b[1A\r")
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

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env_seconds = os.environ.get("DEMO_SECONDS")
    if argv and argv[0] == "--":  # `python -m devenv demo -- --max-workers 4`
        argv = argv[1:]
    p = argparse.ArgumentParser(
        prog="python -m devenv demo",
        description="Local Zaqar + producer (low, ramp, burst, idle) + monitor + autoscaled "
                    "consumer processes; the last line is a JSON summary.")
    p.add_argument("--seconds", type=float, default=None,
                   help=f"length of the demo, {MIN_SECONDS:g}..{MAX_SECONDS:g} s "
                        f"(default: $DEMO_SECONDS or {DEFAULT_SECONDS:g})")
    p.add_argument("--max-workers", type=int, default=6,
                   help="most consumer processes the monitor may run (default: %(default)s)")
    p.add_argument("--work-s", type=float, default=0.4,
                   help="seconds of work per message (default: %(default)s)")
    p.add_argument("--peak", type=float, default=None,
                   help="messages/s at the top of the ramp (default: what max-workers-2 handle)")
    p.add_argument("--burst", type=float, default=None,
                   help="messages/s during the burst (default: what max-workers handle, 90%%)")
    p.add_argument("--low", type=float, default=1.0, help="messages/s at first (default: %(default)s)")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between the monitor's looks (default: %(default)s)")
    p.add_argument("--target-wait", type=float, default=5.0,
                   help="the target policy's wait target in seconds (default: %(default)s)")
    p.add_argument("--out", default=os.environ.get("QW_DEMO_OUT") or str(REPO_ROOT / "demo-out"),
                   help="folder for the decision log and the consumers' logs (emptied first; "
                        "default: $QW_DEMO_OUT or demo-out/)")
    args = p.parse_args(argv)
    seconds = args.seconds
    if seconds is None:
        try:
            seconds = float(env_seconds) if env_seconds else DEFAULT_SECONDS
        except ValueError:
            p.error(f"DEMO_SECONDS={env_seconds!r} is not allowed: a number of seconds, "
                    f"{MIN_SECONDS:g} to {MAX_SECONDS:g}")
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        p.error(f"demo length {seconds:g} s is not allowed: from {MIN_SECONDS:g} to {MAX_SECONDS:g} s")
    args.seconds = seconds
    if not 1 <= args.max_workers <= 16:
        p.error(f"--max-workers={args.max_workers} is not allowed: from 1 to 16")
    if not 0.01 <= args.work_s <= 5:
        p.error(f"--work-s={args.work_s} is not allowed: from 0.01 to 5 seconds")
    per_worker = 1.0 / args.work_s
    args.peak = args.peak if args.peak is not None else max(1.0, (args.max_workers - 2) * per_worker * 0.8)
    args.burst = args.burst if args.burst is not None else args.max_workers * per_worker * 0.9
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from devenv.zaqar import LocalZaqar
    from workload.autoscale.local import LocalActuator
    from workload.autoscale.monitor import Monitor
    from workload.autoscale.policy import TargetConfig, TargetPolicy
    from workload.producer import Producer
    from workload.queues import open_queue
    from workload.queues.base import QueuePolicy

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "consumers").mkdir(parents=True)
    view = View()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    produce_s = 0.8 * args.seconds
    profile = Profile(produce_s, args.low, args.peak, args.burst)
    view.note(f"demo: {args.seconds:g}s - producing {produce_s:.0f}s (low {args.low:g}/s, ramp to "
              f"{args.peak:.1f}/s, burst {args.burst:.1f}/s, idle), then draining; "
              f"{args.work_s:g}s of work per message; 0..{args.max_workers} consumers")
    zaqar = LocalZaqar()
    actuator = monitor = producer = None
    produced: set[int] = set()
    events = {"up": 0, "down": 0}
    max_workers = 0
    reader = LogReader()
    last_reason = ["(none yet)"]
    notes: list[str] = []  # scale events, printed by the main thread as they happen
    result: dict[str, Any] = {}
    started = time.monotonic()
    try:
        view.note("starting the local Zaqar...")
        zaqar.start()
        queue_name = f"demo-{uuid.uuid4().hex[:8]}"
        queue = open_queue("zaqar", queue_name, **zaqar.queue_options)
        queue.ensure(QueuePolicy(message_ttl=3600, claim_ttl=60, claim_grace=60, max_claims=5))
        view.note(f"zaqar at {zaqar.url}, queue {queue_name}; logs in {out}")

        consumer_args = ["--queue", queue_name, "--backend", "zaqar", "--zaqar-url", zaqar.url,
                         "--project", zaqar.project, "--python", "workload.handlers.builtin:sleep",
                         "--batch", "1", "--prefetch", "0", "--concurrency", "1",
                         "--drain-timeout", "10", "--retry-delay", "1"]
        actuator = LocalActuator(consumer_args, out / "consumers", min_size=0,
                                 max_size=args.max_workers, stop_timeout=20)
        policy = TargetPolicy(TargetConfig(
            min_size=0, max_size=args.max_workers, target_wait_s=args.target_wait,
            boot_time_s=2.0, service_time_s=args.work_s, max_step_up=args.max_workers,
            max_step_down=2, scale_down_window_s=4 * args.interval, idle_to_zero_s=8.0,
            rate_smoothing_s=4 * args.interval))
        decisions = open(out / "decisions.jsonl", "w", buffering=1)

        def log(record: dict[str, Any]) -> None:
            decisions.write(json.dumps(record, default=str) + "\n")
            d = record["decision"]
            if record.get("result") and record["result"].get("changed"):
                r = record["result"]
                events["up" if r["after"] > r["before"] else "down"] += 1
                notes.append(f"  scale {'up' if r['after'] > r['before'] else 'down'} "
                             f"{r['before']} -> {r['after']} workers: {d['reason']}")
            if d["action"] != "hold" or record.get("error"):
                last_reason[0] = (f"{d['action']} -> {d['desired']}: {d['reason']}"
                                  + (f" [error: {record['error']}]" if record.get("error") else ""))

        monitor = Monitor(queue, policy, actuator, interval=args.interval, max_backoff=4.0, log=log)
        mon_thread = threading.Thread(target=monitor.run, name="monitor", daemon=True)
        producer = Producer(queue, iter(lambda: {"work_s": args.work_s}, None),
                            rate=profile.rate, duration=produce_s, batch=10, progress_every=0,
                            on_post=lambda bodies: produced.update(b["seq"] for b in bodies),
                            progress=open(os.devnull, "w"))
        mon_thread.start()
        producer.start()
        started = time.monotonic()  # the profile's clock: the producer's start

        def tick(now: float) -> None:
            nonlocal max_workers
            reader.poll(actuator.log_paths())
            while notes:
                view.note(f"t={now - started:5.1f}s" + notes.pop(0))
            g = monitor.last or {}
            obs = (g.get("observation") or {}).get("stats") or {}
            group = g.get("group") or {}
            current = group.get("current", 0) or 0
            max_workers = max(max_workers, current)
            phase = profile.phase(now - started)
            text = (f"t={now - started:5.1f}s {phase:<5} in {profile.rate(now - started):4.1f}/s | "
                    f"queue free {obs.get('free', '?'):>4} claimed {obs.get('claimed', '?'):>3} | "
                    f"workers {current} ({group.get('pending', 0)} starting) | "
                    f"done {len(reader.done):>4} at {reader.throughput():4.1f}/s | "
                    f"produced {len(produced)}")
            view.show(now - started, text, last_reason[0])

        while not stop.is_set() and time.monotonic() - started < produce_s:
            tick(time.monotonic())
            stop.wait(0.5)
        producer.stop()
        producer.join(10)
        view.note(f"producing stopped after {len(produced)} messages; draining what is queued "
                  "and waiting for the monitor to scale the idle pool to zero...")
        # Drain: the monitor keeps running (it wakes consumers for anything left) until every
        # produced message was handled and it has scaled the idle pool to zero, bounded by the
        # demo's length plus a margin.
        deadline = started + args.seconds + 15.0
        while not stop.is_set() and time.monotonic() < deadline:
            tick(time.monotonic())
            group = (monitor.last or {}).get("group") or {}
            if produced <= set(reader.done) and group.get("current") == 0:
                break  # all handled, and the monitor has scaled the idle pool to zero
            stop.wait(0.5)
        monitor.stop()
        mon_thread.join(10)
        actuator.close()
        reader.poll(actuator.log_paths())
        consumed = set(reader.done) & produced
        result = {
            "seconds": round(time.monotonic() - started, 1),
            "queue": queue_name,
            "produced": len(produced),
            "consumed": len(consumed),
            "lost": len(produced - consumed),
            "duplicates": sum(n - 1 for n in reader.done.values()),
            "dead_lettered": reader.dead_letters,
            "max_workers": max_workers,
            "scale_events": events["up"] + events["down"],
            "scale_ups": events["up"],
            "scale_downs": events["down"],
            "p95_wait_s": p95([reader.waits[s] for s in consumed]),
            "target_wait_s": args.target_wait,
            "monitor_looks": monitor.decisions,
            "logs": str(out),
        }
        try:
            final = queue.stats()
            result["left_in_queue"] = final.total
        except Exception as exc:  # the summary must still come out
            result["left_in_queue"] = f"unknown: {exc}"
        decisions.close()
    except Exception as exc:
        view.close()
        print(f"demo: failed: {exc}", file=sys.stderr)
        result = {"error": str(exc), "produced": len(produced), "consumed": len(reader.done),
                  "lost": None, "duplicates": None, "max_workers": max_workers,
                  "scale_events": events["up"] + events["down"], "p95_wait_s": None}
        return_code = 1
    else:
        return_code = 0 if result["lost"] == 0 else 1
    finally:
        if producer is not None:
            producer.stop()
        if monitor is not None:
            monitor.stop()
        if actuator is not None:
            actuator.close(timeout=10)
        zaqar.stop()
        view.close()
    print(json.dumps(result), flush=True)
    return return_code


if __name__ == "__main__":
    sys.exit(main())

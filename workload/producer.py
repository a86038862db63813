"""The producer: posts messages at a rate (or a rate schedule), in batches, and reports.

Use it in-process (the demo drives it with a rate schedule) or through the CLI::

    producer = Producer(queue, widget_requests(invalid_share=0.1), rate=lambda t: 5 if t < 30 else 50,
                        duration=60)
    summary = producer.run()            # or producer.start() / producer.stop() / producer.join()

Every body is stamped with ``seq`` (0, 1, 2, ... within this producer), ``produced_at`` (Unix
time, seconds) and ``producer`` (this run's id), so a reader can count lost and duplicate
messages and how long each waited. Dict payloads get those keys added; any other payload is
wrapped as ``{"data": payload, ...}``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import sys
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, TextIO

from workload.queues.base import MAX_POST_MESSAGES, QueueDriver, QueueError
from workload.settings import SettingError

Rate = float | Callable[[float], float] | None  # messages/s, a schedule t -> messages/s, or unlimited

MAX_TICK = 0.1  # longest sleep, so a changing schedule or stop() is noticed quickly
POST_RETRIES = 3


# -- payload sources ---------------------------------------------------------------------------
def widget_requests(invalid_share: float = 0.0, work_s: float | None = None,
                    seed: int | None = None) -> Iterator[dict[str, Any]]:
    """Endless widget-creation requests, as the request/response seed's producer makes them.

    ``invalid_share`` (0..1) of them carry a widget id that is not a UUID (poison messages the
    ``widget`` handler rejects). ``work_s`` adds the time each widget takes to make.
    """
    if not 0.0 <= invalid_share <= 1.0:
        raise SettingError("invalid_share", invalid_share, "a fraction from 0 to 1")
    rng = random.Random(seed)
    while True:
        if rng.random() < invalid_share:
            widget_id = "not-a-widget-" + "%08x" % rng.getrandbits(32)
        else:
            widget_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        body: dict[str, Any] = {"widget_id": widget_id, "action": "create"}
        if work_s:
            body["work_s"] = work_s
        yield body


def parse_line(line: str) -> Any:
    """One line of a payload file: JSON if it parses, else the text itself."""
    text = line.rstrip("\r\n")
    try:
        return json.loads(text)
    except ValueError:
        return text


def lines_from(stream: TextIO) -> Iterator[Any]:
    """Payloads from a text stream, one per non-empty line (JSON or plain text)."""
    for line in stream:
        if line.strip():
            yield parse_line(line)


def file_payloads(path: str) -> Iterator[Any]:
    """Payloads from a file (``-`` = stdin), one per non-empty line."""
    if path == "-":
        yield from lines_from(sys.stdin)
        return
    with open(path, encoding="utf-8") as f:
        yield from lines_from(f)


def constant_rate(rate: Rate) -> Callable[[float], float] | None:
    """A schedule from a rate: a number becomes a constant function; None stays unlimited."""
    if rate is None or callable(rate):
        return rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0 or math.isnan(rate):
        raise SettingError("rate", rate, "messages per second, 0 or more")
    value = float(rate)
    return lambda t: value


# -- the producer ------------------------------------------------------------------------------
@dataclasses.dataclass
class ProducerSummary:
    """What a producer run did; ``as_dict`` is the JSON summary line."""

    queue: str
    producer: str
    sent: int = 0
    failed: int = 0
    batches: int = 0
    elapsed_s: float = 0.0
    first_seq: int | None = None
    last_seq: int | None = None
    stopped_by: str = ""  # count, duration, payloads-exhausted, stop, error

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(event="summary", mode="producer", elapsed_s=round(self.elapsed_s, 3),
                 rate=round(self.rate, 2))
        return d


class Producer:
    """Posts ``payloads`` to ``queue`` at ``rate`` until ``count``, ``duration``, the payloads
    run out, or :meth:`stop`.

    :param rate: messages/s; a callable ``t -> messages/s`` (``t`` = seconds since start) for
        ramps, bursts and idle periods (0 = idle); None = as fast as the service takes them.
    :param count: stop after this many messages (None: no limit).
    :param duration: stop after this many seconds (None: no limit).
    :param batch: most messages per post (1..20); lower rates post as soon as one is due.
    :param progress_every: seconds between progress lines on ``progress``; 0 = none.
    :param on_post: called with the list of bodies after each successful post (for the demo).
    """

    def __init__(self, queue: QueueDriver, payloads: Iterable[Any], rate: Rate = None,
                 count: int | None = None, duration: float | None = None, batch: int = 10,
                 progress_every: float = 5.0, progress: TextIO | None = None,
                 producer_id: str | None = None, start_seq: int = 0,
                 on_post: Callable[[list[dict[str, Any]]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if not 1 <= batch <= MAX_POST_MESSAGES:
            raise SettingError("batch", batch, f"from 1 to {MAX_POST_MESSAGES}")
        if count is not None and count < 0:
            raise SettingError("count", count, "0 or more")
        if duration is not None and duration < 0:
            raise SettingError("duration", duration, "0 or more seconds")
        self.queue = queue
        self.payloads = iter(payloads)
        self.schedule = constant_rate(rate)
        self.count, self.duration, self.batch = count, duration, batch
        self.progress_every = progress_every
        self.progress = sys.stderr if progress is None else progress
        self.producer_id = producer_id or uuid.uuid4().hex[:8]
        self.on_post = on_post
        self.clock = clock
        self._seq = itertools.count(start_seq)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.summary = ProducerSummary(queue=getattr(queue, "name", "?"), producer=self.producer_id)

    # -- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to end after the post in flight (thread- and signal-safe)."""
        self._stop.set()

    def start(self) -> "Producer":
        """Run in a background thread; :meth:`join` returns the summary."""
        self._thread = threading.Thread(target=self.run, name=f"producer-{self.producer_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> ProducerSummary:
        if self._thread:
            self._thread.join(timeout)
        return self.summary

    @property
    def sent(self) -> int:
        return self.summary.sent

    # -- the loop ------------------------------------------------------------------------------
    def stamp(self, payload: Any) -> dict[str, Any]:
        """The body posted for a payload: the payload plus seq, produced_at and producer."""
        body = dict(payload) if isinstance(payload, dict) else {"data": payload}
        body.update(seq=next(self._seq), produced_at=round(time.time(), 6), producer=self.producer_id)
        return body

    def run(self) -> ProducerSummary:
        """Post until a stop condition; return (and keep in ``.summary``) what was done."""
        s = self.summary
        start = self.clock()
        due = 0.0  # messages the schedule has asked for so far (its integral)
        last = start
        next_progress = start + self.progress_every if self.progress_every else math.inf
        exhausted = False
        try:
            while True:
                now = self.clock()
                elapsed = now - start
                if self._stop.is_set():
                    s.stopped_by = "stop"
                    break
                if self.count is not None and s.sent + s.failed >= self.count:
                    s.stopped_by = "count"
                    break
                if self.duration is not None and elapsed >= self.duration:
                    s.stopped_by = "duration"
                    break
                if exhausted:
                    s.stopped_by = "payloads-exhausted"
                    break
                if now >= next_progress:
                    self._report(elapsed)
                    next_progress = now + self.progress_every
                if self.schedule is None:
                    wanted = self.batch
                else:
                    rate = max(0.0, float(self.schedule(elapsed)))
                    due += rate * (now - last)
                    wanted = int(due) - (s.sent + s.failed)
                    if wanted < 1:
                        self._stop.wait(self._sleep_for(rate, due, now, start, next_progress))
                        last = now
                        continue
                last = now
                if self.count is not None:
                    wanted = min(wanted, self.count - s.sent - s.failed)
                bodies = []
                for payload in itertools.islice(self.payloads, min(wanted, self.batch)):
                    bodies.append(self.stamp(payload))
                if len(bodies) < min(wanted, self.batch):
                    exhausted = True
                if bodies:
                    self._post(bodies)
        finally:
            s.elapsed_s = self.clock() - start
        return s

    def _sleep_for(self, rate: float, due: float, now: float, start: float,
                   next_progress: float) -> float:
        wait = MAX_TICK if rate <= 0 else min(MAX_TICK, (1.0 - (due % 1.0)) / rate)
        if self.duration is not None:
            wait = min(wait, max(0.0, start + self.duration - now))
        return max(0.001, min(wait, max(0.0, next_progress - now)))

    def _post(self, bodies: list[dict[str, Any]]) -> None:
        """Post one batch; retry a failed post (the service may have kept it: at-least-once)."""
        s = self.summary
        for attempt in range(POST_RETRIES + 1):
            try:
                self.queue.post(bodies)
                break
            except QueueError as exc:
                if attempt == POST_RETRIES or self._stop.is_set():
                    s.failed += len(bodies)
                    print(f"producer: post of {len(bodies)} failed for good: {exc}",
                          file=self.progress, flush=True)
                    return
                print(f"producer: post failed ({exc}); retrying", file=self.progress, flush=True)
                self._stop.wait(0.5 * 2 ** attempt)
        s.sent += len(bodies)
        s.batches += 1
        if s.first_seq is None:
            s.first_seq = bodies[0]["seq"]
        s.last_seq = bodies[-1]["seq"]
        if self.on_post:
            self.on_post(bodies)

    def _report(self, elapsed: float) -> None:
        s = self.summary
        target = ""
        if self.schedule is not None:
            target = f", target {self.schedule(elapsed):.1f}/s"
        print(f"producer {self.producer_id}: {elapsed:6.1f} s  sent {s.sent}  "
              f"({s.sent / elapsed if elapsed else 0:.1f}/s{target})  failed {s.failed}",
              file=self.progress, flush=True)

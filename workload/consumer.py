"""The consumer: claim messages, run a handler on each, delete, retry or dead-letter them.

Threads, all inside one :class:`Consumer`:

- the **claim loop** (the caller's thread, :meth:`Consumer.run`) claims up to ``batch`` messages
  while handlers run, keeping at most ``concurrency + prefetch`` messages in hand, and backs off
  (up to ``poll_max`` s) when the queue is empty or the service fails;
- ``concurrency`` **workers** run the handler, one message at a time each;
- the **settler** deletes done messages in bulk (one request per claim and up to 20 ids), posts
  dead letters, and releases a claim's failed messages ``retry_delay`` seconds after its last
  message settled (so a failing message goes back for another try without a busy loop);
- the **renewer** extends a claim before it expires while its messages are still being handled.

A message that keeps failing is dead-lettered by the service when the queue has a max-claims
policy (Zaqar ``_max_claim_count``, SQS redrive policy), otherwise by the consumer after
``max_attempts`` failed attempts (the service's claim count, or the consumer's own count where the
service gives none). A handler may also reject a message outright (python ``Reject``).

On :meth:`stop` (SIGTERM/SIGINT in the CLI) it stops claiming, gives back messages not yet
started, lets running handlers finish for up to ``drain_timeout`` seconds, kills what still runs
(exec children), releases every claim it still holds and returns. A second stop skips the drain.

:meth:`drain` (the monitor's drain request, :mod:`workload.drain_request`) is the same stop, taken
back by :meth:`undrain` while handlers still run: the consumer stops claiming and gives back what
is not started, and returns once nothing is in a handler (at ``drain_timeout`` it stops what still
runs, as a stop does); called off before then, it claims again.

Each handled message is one JSON log line (see :data:`LOG_FIELDS`); the last line is the summary.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import queue as queue_mod
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from workload.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_QUEUE, EXIT_USAGE  # noqa: F401 (re-exported)
from workload.handlers import DONE, REJECT, RETRY, TIMEOUT, Context, Handler, Result
from workload.heartbeat import Heartbeat
from workload.queues.base import (
    MAX_DELETE_IDS,
    Claim,
    ClaimLost,
    InvalidInput,
    Message,
    QueueDriver,
    QueueError,
    QueueNotFound,
)
from workload.settings import check_fields, check_limits, setting

#: Outcomes in the log, one per handled message.
OUTCOMES = ("done", "retry", "timeout", "dead-letter", "released")
#: Fields of a ``"event": "message"`` log line.
LOG_FIELDS = (
    "ts",
    "event",
    "consumer",
    "queue",
    "message_id",
    "claim_id",
    "outcome",
    "duration_s",
    "wait_s",
    "claim_count",
    "attempt",
    "seq",
    "error",
)

DELETE_THREADS = 4  # parallel single deletes when the driver has no bulk delete
FLUSH_AFTER = 0.5  # seconds a done message may wait for the rest of its claim before it is deleted


class FatalQueueError(RuntimeError):
    """The service refused the consumer for good (missing queue, bad credentials)."""


@dataclasses.dataclass
class ConsumerConfig:
    """How a consumer claims and handles messages. Every field with flags is a CLI option too
    (declared here once, see workload/settings.py); those with a stack key a stack setting.

    ``prefetch`` 0 keeps the backlog visible to an autoscaler: nothing is claimed that no worker
    can start now. ``max_attempts`` None = automatic: the queue's max-claims policy plus one as a
    backstop when the service dead-letters, else 5; 0 = never.
    """

    batch: int = setting(
        10,
        "messages per claim (the claim limit)",
        flags=("--batch",),
        env=("QW_BATCH",),
        kind=int,
        lo=1,
        hi=20,
        stack="consumerBatch",
    )
    concurrency: int = setting(
        1,
        "handler workers running at once (a server's share of the target policy's capacity)",
        flags=("-w", "--concurrency"),
        env=("QW_CONCURRENCY",),
        kind=int,
        lo=1,
        hi=1000,
        stack="consumerConcurrency",
    )
    prefetch: int | None = setting(
        None,
        "messages claimed ahead beyond --concurrency (unset: --batch); 0 leaves all waiting "
        "messages free, visible to the autoscaler and other consumers",
        flags=("--prefetch",),
        env=("QW_PREFETCH",),
        kind=int,
        lo=0,
        hi=1000,
        optional=True,
        stack="consumerPrefetch",
    )
    claim_ttl: int | None = setting(
        None,
        "seconds a claim lasts, within the backend's limits (zaqar 60..43200); renewed while "
        "a handler still runs (unset: the queue policy's)",
        flags=("--claim-ttl",),
        env=("QW_CLAIM_TTL",),
        kind=int,
        lo=1,
        hi=43200,
        optional=True,
    )
    claim_grace: int | None = setting(
        None,
        "Zaqar claim grace seconds, within the backend's limits (zaqar 60..43200; unset: the queue policy's)",
        flags=("--grace",),
        env=("QW_CLAIM_GRACE",),
        kind=int,
        lo=0,
        hi=43200,
        optional=True,
    )
    timeout: float | None = setting(
        None,
        "seconds a handler may run per message; an exec program is then killed (unset: none)",
        flags=("--timeout",),
        env=("QW_TIMEOUT",),
        kind=float,
        lo=0,
        lo_open=True,
        optional=True,
        stack="handlerTimeout",
    )
    max_attempts: int | None = setting(
        None,
        "failed attempts before the consumer dead-letters a message itself; unset: the service "
        "does it by the queue's max-claims policy (backstop +1), else 5; 0 = never",
        flags=("--max-attempts",),
        env=("QW_MAX_ATTEMPTS",),
        kind=int,
        lo=0,
        hi=10**6,
        optional=True,
    )
    retry_delay: float = setting(
        5.0,
        "seconds a failed message is held before it is released for another try",
        flags=("--retry-delay",),
        env=("QW_RETRY_DELAY",),
        kind=float,
        lo=0,
        hi=43200,
        stack="retryDelay",
    )
    drain_timeout: float = setting(
        20.0,
        "on SIGTERM/SIGINT, seconds running handlers get to finish before their claims are released",
        flags=("--drain-timeout",),
        env=("QW_DRAIN_TIMEOUT",),
        kind=float,
        lo=0,
        hi=3600,
        stack="drainTimeout",
    )
    max_messages: int | None = setting(
        None,
        "stop after handling this many messages",
        flags=("--max-messages",),
        env=("QW_MAX_MESSAGES",),
        kind=int,
        lo=1,
        optional=True,
    )
    idle_exit: float | None = setting(
        None,
        "stop once the queue has been empty this many seconds",
        flags=("--idle-exit",),
        env=("QW_IDLE_EXIT",),
        kind=float,
        lo=0,
        optional=True,
    )
    poll_min: float = setting(
        0.05, "first wait after an empty claim; doubles up to poll_max", kind=float, lo=0.001, hi=60
    )
    poll_max: float = setting(
        1.0, "longest wait between claims of an empty queue", kind=float, lo=0.001, hi=60
    )
    drain_watch: str | None = setting(
        None,
        "metadata API URL of this server's meta_data.json to watch for the monitor's drain "
        "request (server metadata qw_drain): then stop claiming, finish or release what is held and "
        "exit 0 (unset: no watch)",
        flags=("--drain-watch",),
        env=("QW_DRAIN_WATCH",),
        optional=True,
        metavar="URL",
    )
    drained_file: str | None = setting(
        None,
        "file written when the consumer exits after a drain request (the server's unit powers "
        "the server off when it is there)",
        flags=("--drained-file",),
        env=("QW_DRAINED_FILE",),
        optional=True,
        metavar="PATH",
    )
    no_bulk_delete: bool = setting(
        False,
        "delete done messages one by one (for credentials whose access rules forbid bulk delete); "
        "else in one request per claim where the driver can",
        flags=("--no-bulk-delete",),
        env=("QW_NO_BULK_DELETE",),
        kind=bool,
    )

    def validate(self) -> None:
        """Every field in its declared range; :class:`SettingError` (a ValueError) names it."""
        check_fields(self)


class JsonLog:
    """JSON-lines writer (thread-safe). Also hands every record to ``on_event`` if given."""

    def __init__(
        self, stream: TextIO | None = None, on_event: Callable[[dict[str, Any]], None] | None = None
    ):
        self.stream = stream
        self.on_event = on_event
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> dict[str, Any]:
        rec = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
        rec.update(fields)
        if self.stream is not None:
            line = json.dumps(rec, default=str, separators=(", ", ": "))
            with self._lock:
                self.stream.write(line + "\n")
                self.stream.flush()
        if self.on_event is not None:
            self.on_event(rec)
        return rec


@dataclasses.dataclass(eq=False)
class _Held:
    """One claim the consumer holds, and what is left to settle in it."""

    claim: Claim
    expires: float  # monotonic time the claim ends unless renewed
    pending: int  # messages handed to workers and not yet settled
    unreported: int  # messages whose handler has not returned yet
    retry: list[Message] = dataclasses.field(default_factory=list)
    release_at: float | None = None
    lost: bool = False
    closed: bool = False


@dataclasses.dataclass
class _Task:
    message: Message
    held: _Held
    wait_s: float
    attempt: int


def _seq(body: Any) -> Any:
    return body.get("seq") if isinstance(body, dict) else None


def _wait_s(message: Message, now_wall: float) -> float:
    """How long the message waited: since ``produced_at`` in its body, else its age at claim."""
    body = message.body
    if isinstance(body, dict) and isinstance(body.get("produced_at"), (int, float)):
        return round(max(0.0, now_wall - body["produced_at"]), 3)
    return round(float(message.age or 0.0), 3)


class Consumer:
    """Consumes ``queue`` with ``handler``. :meth:`run` blocks until a stop condition and
    returns the summary; :meth:`stop` may be called from any thread or a signal handler.

    :param reply_queue: where a handler's reply goes (None: replies are dropped).
    :param log: a :class:`JsonLog` (default: JSON lines on stdout).
    :param consumer_id: the name in the logs (default ``host-pid``).
    """

    def __init__(
        self,
        queue: QueueDriver,
        handler: Handler,
        config: ConsumerConfig | None = None,
        reply_queue: QueueDriver | None = None,
        log: JsonLog | None = None,
        consumer_id: str | None = None,
    ):
        self.queue = queue
        self.handler = handler
        self.config = config or ConsumerConfig()
        self.config.validate()
        self._check_limits(queue)
        self.reply_queue = reply_queue
        self.log = log or JsonLog(sys.stdout)
        self.consumer_id = consumer_id or f"{socket.gethostname()}-{os.getpid()}"
        self.heartbeat = Heartbeat()
        policy = queue.policy  # every driver has one (QueueDriver.policy)
        self.claim_ttl: int = self.config.claim_ttl or policy.claim_ttl
        self.claim_grace: int = (
            policy.claim_grace if self.config.claim_grace is None else self.config.claim_grace
        )
        service_max = policy.max_claims
        self.service_dead_letters = service_max > 0
        if self.config.max_attempts is not None:
            self.max_attempts = self.config.max_attempts
        else:
            self.max_attempts = service_max + 1 if service_max else 5
        self.prefetch = self.config.batch if self.config.prefetch is None else self.config.prefetch
        self.counters: collections.Counter[str] = collections.Counter()
        self._count_lock = threading.Lock()
        self._stopping = threading.Event()
        self._force = threading.Event()
        self._draining = threading.Event()
        self._drain_started = 0.0
        self._lock = threading.Condition()
        self._inflight = 0  # messages claimed and not yet settled by a worker
        self._held: list[_Held] = []
        self._failures: dict[str, int] = {}  # local failure counts where the service has none
        self._tasks: queue_mod.Queue[_Task | None] = queue_mod.Queue()
        self._results: queue_mod.Queue[tuple[_Task, Result, float] | None] = queue_mod.Queue()
        self._bulk_ok = not self.config.no_bulk_delete
        # Only a driver with the service's own bulk call saves requests; the base default
        # deletes one by one, which the consumer does better itself, in parallel.
        self._has_bulk = type(queue).delete_many is not QueueDriver.delete_many
        self._deleters = concurrent.futures.ThreadPoolExecutor(DELETE_THREADS, "deleter")
        self.stopped_by = ""
        self.started = 0.0

    def _check_limits(self, queue: QueueDriver) -> None:
        """Refuse a batch or claim TTL this queue's service would refuse, naming its range."""
        limits = getattr(queue, "limits", None)
        if limits is not None:
            check_limits(limits, dataclasses.asdict(self.config))

    # -- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop claiming and drain; a second call skips the drain (signal-safe: sets flags only)."""
        if self._stopping.is_set():
            self._force.set()
        self._stopping.set()

    def drain(self) -> None:
        """Stop claiming, give back what is not started, return once the running handlers are
        done (or at ``drain_timeout``); :meth:`undrain` takes it back until then."""
        self._drain_started = time.monotonic()
        self._draining.set()

    def undrain(self) -> bool:
        """Take a :meth:`drain` back: claiming resumes. False if the consumer has stopped already."""
        with self._lock:  # against _drained's decision to stop
            if self._stopping.is_set():
                return False
            self._draining.clear()
            return True

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _winding_down(self) -> bool:
        return self._stopping.is_set() or self._draining.is_set()

    def summary(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started if self.started else 0.0
        c = self.counters
        return {
            "consumer": self.consumer_id,
            "queue": self.queue.name,
            "mode": "consumer",
            "handler": self.handler.describe(),
            "stopped_by": self.stopped_by,
            "claims": c["claims"],
            "claimed": c["claimed"],
            "done": c["done"],
            "retry": c["retry"],
            "timeout": c["timeout"],
            "dead_letter": c["dead-letter"],
            "released": c["released"],
            "replies": c["replies"],
            "renewals": c["renewals"],
            "claims_lost": c["claims_lost"],
            "delete_errors": c["delete_errors"],
            "service_errors": c["service_errors"],
            "elapsed_s": round(elapsed, 3),
            "rate": round(c["done"] / elapsed, 2) if elapsed > 0 else 0.0,
        }

    def _count(self, key: str, n: int = 1) -> None:
        with self._count_lock:
            self.counters[key] += n

    # -- the claim loop --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Consume until stopped; return the summary (also logged as the last line)."""
        self.started = time.monotonic()
        cfg = self.config
        self.log(
            "start",
            consumer=self.consumer_id,
            queue=self.queue.name,
            handler=self.handler.describe(),
            batch=cfg.batch,
            concurrency=cfg.concurrency,
            prefetch=self.prefetch,
            claim_ttl=self.claim_ttl,
            max_attempts=self.max_attempts,
            service_dead_letters=self.service_dead_letters,
        )
        workers = [
            threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
            for i in range(cfg.concurrency)
        ]
        settler = threading.Thread(target=self._settle_loop, name="settler", daemon=True)
        renewer = threading.Thread(target=self._renew_loop, name="renewer", daemon=True)
        for t in (*workers, settler, renewer):
            t.start()
        try:
            self._claim_loop()
        except FatalQueueError as exc:
            self.stopped_by = "error"
            self.log("error", consumer=self.consumer_id, error=str(exc), fatal=True)
            self._stopping.set()
            self._shutdown(workers, settler, renewer)
            raise
        except BaseException:
            self._stopping.set()
            self._force.set()
            self._shutdown(workers, settler, renewer)
            raise
        self._shutdown(workers, settler, renewer)
        summary = self.summary()
        self.log("summary", **summary)
        return summary

    def _claim_loop(self) -> None:
        cfg = self.config
        limit_in_hand = cfg.concurrency + self.prefetch
        # Claim full batches (fewer, bigger requests): wait until a whole batch fits, so the next
        # claim happens while the last ``concurrency`` messages of the previous one run. With
        # prefetch 0 claim as soon as any worker is free.
        threshold = min(cfg.batch, limit_in_hand) if self.prefetch else 1
        poll = cfg.poll_min
        idle_since = time.monotonic()
        queue_answered = False  # beat only once the queue answers, and not while claims fail
        while not self._stopping.is_set():
            if queue_answered:
                self.heartbeat.beat()
            if self._draining.is_set():
                if self._drained():
                    break
                idle_since = time.monotonic()
                continue
            if self._reached_max_messages():
                break
            limit = self._room(limit_in_hand, threshold)
            if limit is None:
                continue
            try:
                claim = self._claim(limit)
            except QueueError as exc:
                queue_answered = False
                self._count("service_errors")
                self.log(
                    "error", consumer=self.consumer_id, queue=self.queue.name, op="claim", error=str(exc)
                )
                self._pause(min(poll * 4, 30.0))
                poll = min(max(poll * 2, 1.0), 30.0)
                continue
            if not queue_answered:
                queue_answered = True
                self.heartbeat.beat()
            now = time.monotonic()
            if claim is None or not claim.messages:
                if self._idle_exit_due(now - idle_since):
                    break
                self._pause(poll)
                poll = min(poll * 2, cfg.poll_max)
                continue
            poll = cfg.poll_min
            idle_since = now
            self._hand_out(claim, now)
        if not self.stopped_by:
            self.stopped_by = "signal"

    def _pause(self, seconds: float) -> None:
        """The claim loop's wait: a stop or a drain ends it."""
        end = time.monotonic() + seconds
        while not self._winding_down() and (left := end - time.monotonic()) > 0:
            self._stopping.wait(min(left, 0.25))

    def _drained(self) -> bool:
        """One look while draining: give back what is not started; True once nothing is in a
        handler, or at the drain timeout (then what still runs is stopped, as by a second stop)."""
        self._release_unstarted()
        with self._lock:
            if self._inflight:
                self._lock.wait(0.2)
            late = self._inflight and time.monotonic() - self._drain_started >= self.config.drain_timeout
            if not self._draining.is_set() or (self._inflight and not late):
                return False
            if late:
                self._force.set()
            self.stopped_by = "drain"
            self._stopping.set()
            return True

    def _release_unstarted(self) -> None:
        """Messages claimed but not started go back at once (only running handlers finish)."""
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue_mod.Empty:
                return
            if task is None:  # a worker's stop token (shutdown): leave it for the worker
                self._tasks.put(None)
                return
            self._results.put((task, Result("released", error="consumer stopping"), 0.0))

    def _reached_max_messages(self) -> bool:
        """With --max-messages, once that many are claimed: wait for what is held to settle, and
        stop (True)."""
        cfg = self.config
        if cfg.max_messages is None or self.counters["claimed"] < cfg.max_messages:
            return False
        with self._lock:
            while self._inflight and not self._stopping.is_set():
                self._lock.wait(0.2)
        self.stopped_by = self.stopped_by or "max-messages"
        return True

    def _room(self, limit_in_hand: int, threshold: int) -> int | None:
        """How many messages the next claim may ask for; None (after a short wait for a worker to
        finish) while fewer than ``threshold`` would fit in hand."""
        cfg = self.config
        with self._lock:
            room = limit_in_hand - self._inflight
            if room < threshold:
                self._lock.wait(0.5)
                return None
        limit = min(cfg.batch, room)
        if cfg.max_messages is not None:
            limit = min(limit, cfg.max_messages - self.counters["claimed"])
        return limit

    def _claim(self, limit: int) -> Claim | None:
        """One claim. A refusal that retrying cannot mend (queue missing, bad input, credentials)
        is a :class:`FatalQueueError`; any other :class:`QueueError` is the loop's to back off."""
        try:
            return self.queue.claim(limit=limit, ttl=self.claim_ttl, grace=self.claim_grace)
        except (QueueNotFound, InvalidInput) as exc:
            raise FatalQueueError(f"queue {self.queue.name!r}: {exc}") from exc
        except QueueError as exc:
            if exc.status in (401, 403):
                raise FatalQueueError(f"queue {self.queue.name!r} refused the claim: {exc}") from exc
            raise

    def _idle_exit_due(self, idle_for: float) -> bool:
        """With --idle-exit: nothing claimed for that long and nothing in hand, so stop (True)."""
        if self.config.idle_exit is None or idle_for < self.config.idle_exit:
            return False
        with self._lock:
            busy = self._inflight > 0
        if busy:
            return False
        self.stopped_by = "idle"
        return True

    def _hand_out(self, claim: Claim, now: float) -> None:
        held = _Held(
            claim=claim, expires=now + claim.ttl, pending=len(claim.messages), unreported=len(claim.messages)
        )
        wall = time.time()
        with self._lock:
            self._held.append(held)
            self._inflight += len(claim.messages)
        self._count("claims")
        self._count("claimed", len(claim.messages))
        for m in claim.messages:
            attempt = max(m.claim_count or 0, self._failures.get(m.id, 0) + 1)
            self._tasks.put(_Task(m, held, _wait_s(m, wall), attempt))

    # -- workers ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            if self._winding_down() or task.held.lost:
                # not started: give it back at once rather than start work we may not finish
                error = "consumer stopping" if self._winding_down() else "claim lost"
                self._results.put((task, Result("released", error=error), 0.0))
                continue
            ctx = Context(queue=self.queue.name, claim_id=task.held.claim.id, timeout=self.config.timeout)
            start = time.monotonic()
            try:
                result = self.handler.handle(task.message, ctx)
            except Exception as exc:  # noqa: BLE001 - a broken handler must not kill the worker
                result = Result(RETRY, error=f"handler crashed: {type(exc).__name__}: {exc}")
            if result.ok and result.reply is not None and self.reply_queue is not None:
                result = self._reply(self.reply_queue, task, result)
            self._results.put((task, result, time.monotonic() - start))

    def _reply(self, reply_queue: QueueDriver, task: _Task, result: Result) -> Result:
        body = {
            "request_id": task.message.id,
            "reply": result.reply,
            "handled_at": round(time.time(), 6),
            "consumer": self.consumer_id,
        }
        seq = _seq(task.message.body)
        if seq is not None:
            body["seq"] = seq
        try:
            reply_queue.post([body])
        except QueueError as exc:
            return Result(RETRY, error=f"reply not posted: {exc}")
        self._count("replies")
        return result

    # -- settling --------------------------------------------------------------------------------
    def _settle_loop(self) -> None:
        # Done messages wait here per claim and go in one bulk delete once every message of the
        # claim has a result (or 20 are waiting, or the first has waited FLUSH_AFTER seconds).
        done: dict[_Held, list[tuple[_Task, float]]] = {}
        first_at: dict[_Held, float] = {}
        while True:
            try:
                item = self._results.get(timeout=0.1)
            except queue_mod.Empty:
                pass  # no result this tick: still flush and release what is due
            else:
                if item is None:  # shutdown: flush and leave
                    for items in done.values():
                        self._delete_done(items)
                    return
                task, result, duration = item
                held = task.held
                held.unreported -= 1
                if result.ok:
                    done.setdefault(held, []).append((task, duration))
                    first_at.setdefault(held, time.monotonic())
                else:
                    self._settle_failed(task, result, duration)
            now = time.monotonic()
            for held in [
                h
                for h, items in done.items()
                if h.unreported == 0 or len(items) >= MAX_DELETE_IDS or now - first_at[h] >= FLUSH_AFTER
            ]:
                self._delete_done(done.pop(held))
                first_at.pop(held)
            self._release_due()

    def _finish(self, task: _Task) -> None:
        """One message of a claim is settled: count it down and wake the claim loop."""
        held = task.held
        with self._lock:
            held.pending -= 1
            self._inflight -= 1
            if held.pending == 0:
                if held.retry:
                    held.release_at = time.monotonic() + (
                        0 if self._winding_down() else self.config.retry_delay
                    )
                else:
                    held.closed = True
                    self._held.remove(held)
            self._lock.notify_all()

    def _record(self, task: _Task, outcome: str, duration: float, error: str | None = None) -> None:
        self._count(outcome)
        m = task.message
        fields = {
            "consumer": self.consumer_id,
            "queue": self.queue.name,
            "message_id": m.id,
            "claim_id": task.held.claim.id,
            "outcome": outcome,
            "duration_s": round(duration, 4),
            "wait_s": task.wait_s,
            "claim_count": m.claim_count,
            "attempt": task.attempt,
            "seq": _seq(m.body),
        }
        if error:
            fields["error"] = error
        self.log("message", **fields)

    def _delete_done(self, items: list[tuple[_Task, float]]) -> None:
        """Delete done messages of one claim (in bulk where possible), then log and count them."""
        claim = items[0][0].held.claim
        for i in range(0, len(items), MAX_DELETE_IDS):
            chunk = items[i : i + MAX_DELETE_IDS]
            errors = self._delete(claim, [t.message for t, _ in chunk])
            for task, duration in chunk:
                err = errors.get(task.message.id)
                if err:
                    self._count("delete_errors")
                self._failures.pop(task.message.id, None)
                self._record(task, DONE, duration, err)
                self._finish(task)

    def _delete(self, claim: Claim, messages: list[Message]) -> dict[str, str]:
        """Delete handled messages; return {id: error} for those the service would not delete."""
        if self._bulk_ok and len(messages) > 1 and self._has_bulk:
            try:
                self.queue.delete_many(messages, claim)
                return {}
            except QueueError as exc:
                if exc.status in (401, 403):
                    # least-privilege credentials may allow single deletes only: use those from now on
                    self._bulk_ok = False
                    self.log(
                        "warning",
                        consumer=self.consumer_id,
                        queue=self.queue.name,
                        error=f"bulk delete refused ({exc}); deleting one by one",
                    )
                else:
                    self._count("service_errors")
        errors: dict[str, str] = {}

        def one(m: Message) -> None:
            try:
                self.queue.delete(m, claim)
            except QueueError as exc:
                # the claim expired and someone else may have it: it will be handled again
                errors[m.id] = f"delete failed: {exc}"

        if len(messages) > 1:
            # One request per message: overlap them (the service serves several at once).
            list(self._deleters.map(one, messages))
        else:
            for m in messages:
                one(m)
        return errors

    def _settle_failed(self, task: _Task, result: Result, duration: float) -> None:
        m = task.message
        if result.outcome == "released":
            self._hold_for_release(task)
            self._record(task, "released", duration, result.error)
            self._finish(task)
            return
        failures = self._failures.get(m.id, 0) + 1
        self._failures[m.id] = failures
        attempts = max(m.claim_count or 0, failures)
        give_up = result.outcome == REJECT or (self.max_attempts and attempts >= self.max_attempts)
        if give_up and not self._stopping.is_set():
            reason = result.error or result.outcome
            try:
                self.queue.dead_letter(m, task.held.claim, f"after {attempts} attempt(s): {reason}")
            except QueueError as exc:
                self._count("service_errors")
                self._hold_for_release(task)
                self._record(task, RETRY, duration, f"{reason}; dead-letter failed: {exc}")
            else:
                self._failures.pop(m.id, None)
                self._record(task, "dead-letter", duration, reason)
            self._finish(task)
            return
        self._hold_for_release(task)
        outcome = TIMEOUT if result.outcome == TIMEOUT else RETRY
        self._record(task, outcome, duration, result.error)
        self._finish(task)

    def _hold_for_release(self, task: _Task) -> None:
        with self._lock:
            task.held.retry.append(task.message)

    def _release_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            due = [h for h in self._held if everything or (h.release_at is not None and h.release_at <= now)]
            for h in due:
                self._held.remove(h)
                h.closed = True
        for h in due:
            if h.lost:
                continue
            msgs = h.retry if h.pending == 0 else None  # None: the whole claim (shutdown)
            try:
                self.queue.release(h.claim, msgs)
            except ClaimLost:
                pass  # expired already: its messages are free again anyway
            except QueueError as exc:
                self._count("service_errors")
                self.log(
                    "error",
                    consumer=self.consumer_id,
                    queue=self.queue.name,
                    op="release",
                    claim_id=h.claim.id,
                    error=str(exc),
                )

    # -- renewal ---------------------------------------------------------------------------------
    def _renew_loop(self) -> None:
        # Renew a third of the TTL before expiry (at most 5 s before, for very short claims).
        margin = max(min(5.0, self.claim_ttl / 2), self.claim_ttl / 3)
        tick = min(1.0, margin / 3)
        while not self._force.is_set():
            now = time.monotonic()
            with self._lock:
                due = [h for h in self._held if h.pending > 0 and not h.lost and h.expires - now < margin]
            for h in due:
                try:
                    self.queue.renew(h.claim, self.claim_ttl)
                    h.expires = time.monotonic() + self.claim_ttl
                    self._count("renewals")
                    self.log(
                        "renew",
                        consumer=self.consumer_id,
                        queue=self.queue.name,
                        claim_id=h.claim.id,
                        ttl=self.claim_ttl,
                        pending=h.pending,
                    )
                except ClaimLost as exc:
                    h.lost = True
                    self._count("claims_lost")
                    self.log(
                        "claim-lost",
                        consumer=self.consumer_id,
                        queue=self.queue.name,
                        claim_id=h.claim.id,
                        error=str(exc),
                    )
                except QueueError as exc:
                    self._count("service_errors")
                    self.log(
                        "error",
                        consumer=self.consumer_id,
                        queue=self.queue.name,
                        op="renew",
                        claim_id=h.claim.id,
                        error=str(exc),
                    )
            self._force.wait(tick)

    # -- shutdown --------------------------------------------------------------------------------
    def _shutdown(self, workers, settler, renewer) -> None:
        deadline = time.monotonic() + (0 if self._force.is_set() else self.config.drain_timeout)
        self._release_unstarted()
        for _ in workers:
            self._tasks.put(None)
        with self._lock:
            while self._inflight and time.monotonic() < deadline and not self._force.is_set():
                self._lock.wait(0.1)
            overdue = self._inflight
        if overdue:
            self.handler.cancel()  # kill exec children; their results come back as failures
            end = time.monotonic() + 2.0
            with self._lock:
                while self._inflight and time.monotonic() < end:
                    self._lock.wait(0.1)
        self._results.put(None)
        settler.join(timeout=30)
        self._deleters.shutdown(wait=False)
        self._force.set()  # the drain is over: the renewer stops
        # Give back everything still held: failed messages and any still running in a stuck handler.
        self._release_due(everything=True)
        renewer.join(timeout=5)
        with self._lock:
            stuck = self._inflight
        if stuck:
            self._count("released", stuck)
            self.log(
                "warning",
                consumer=self.consumer_id,
                queue=self.queue.name,
                error=f"{stuck} message(s) still in a handler after the drain timeout: "
                "their claims were released",
            )

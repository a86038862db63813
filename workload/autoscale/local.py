"""The local actuator: a pool of ``python -m workload consumer ...`` processes on this machine.

Scale-out starts consumer processes; scale-in sends SIGTERM, so each consumer stops claiming,
finishes or releases what it holds and exits by itself (its claims go back to the queue, nothing
is lost). Exits are reaped on every :meth:`LocalActuator.observe`; a consumer that died is
simply no longer counted, and the next decision replaces it. A process counts as ``booting``
from its start until its log shows the consumer's ``start`` event (it is claiming), which is the
local stand-in for a server still booting.

Every process this actuator starts is its own session (a Ctrl-C at the terminal reaches the
monitor, not the consumers directly) and is stopped by its PID only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workload.autoscale.actuator import Actuator, ActuatorError, ApplyResult, GroupState


@dataclass
class Member:
    """One consumer process of the pool."""

    index: int
    proc: subprocess.Popen
    log_path: Path
    started_at: float
    ready: bool = False
    stopping_since: float | None = None
    returncode: int | None = field(default=None)


class LocalActuator(Actuator):
    """Starts and stops consumer processes to match the desired capacity.

    :param consumer_args: arguments after ``python -m workload consumer`` (queue, handler, ...).
        ``--log-file`` is added per process: each consumer's JSON-lines log goes to
        ``log_dir/consumer-N.jsonl``.
    :param log_dir: folder for the consumers' logs and stderr (created if missing).
    :param env: extra environment for the consumers (e.g. ``QW_ZAQAR_URL``); added to ours.
    :param min_size / max_size: bounds reported in :class:`GroupState` and enforced on apply.
    :param stop_timeout: seconds a SIGTERMed consumer gets before SIGKILL (on :meth:`close`,
        and on :meth:`observe` for stragglers).
    :param python: interpreter that runs the consumers (default: this one).
    """

    def __init__(
        self,
        consumer_args: Sequence[str],
        log_dir: str | os.PathLike,
        *,
        env: Mapping[str, str] | None = None,
        min_size: int = 0,
        max_size: int = 10,
        stop_timeout: float = 30.0,
        python: str | None = None,
    ):
        if min_size < 0 or max_size < min_size:
            raise ActuatorError(f"min_size={min_size}, max_size={max_size}: need 0 <= min <= max")
        self.consumer_args = list(consumer_args)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **(env or {})}
        self.min_size, self.max_size = min_size, max_size
        self.stop_timeout = stop_timeout
        self.python = python or sys.executable
        self.members: list[Member] = []  # running and not asked to stop
        self.stopping: list[Member] = []  # SIGTERM sent, not exited yet
        self.exited: list[Member] = []  # every member that has exited, in order
        self._next = 0
        self._stderr_files: list = []

    # -- the Actuator interface ------------------------------------------------------------------
    def observe(self) -> GroupState:
        """Reap exits, then count the members that run (``booting``: not claiming yet)."""
        self._reap()
        booting = sum(1 for m in self.members if not self._is_ready(m))
        return GroupState(
            current=len(self.members),
            booting=booting,
            updating=False,
            min_size=self.min_size,
            max_size=self.max_size,
        )

    def apply(self, desired: int, reason: str) -> ApplyResult:
        """Start or SIGTERM consumers until ``desired`` (clamped to min/max) run; read back."""
        before = self.observe().current
        target = max(self.min_size, min(self.max_size, int(desired)))
        try:
            while len(self.members) < target:
                self._start_one()
        except OSError as exc:
            raise ActuatorError(f"could not start a consumer: {exc}") from exc
        if len(self.members) > target:
            # Stop the ones not yet claiming first, then the newest: older ones are warm.
            order = sorted(self.members, key=lambda m: (self._is_ready(m), m.started_at))
            for m in order[: len(self.members) - target]:
                self._terminate(m)
        after = self.observe().current
        detail = "" if target == desired else f"clamped to [{self.min_size}, {self.max_size}]"
        return ApplyResult(requested=desired, before=before, after=after, detail=detail)

    def close(self, timeout: float | None = None) -> None:
        """SIGTERM every consumer, wait up to ``timeout`` (default stop_timeout), then SIGKILL."""
        for m in list(self.members):
            self._terminate(m)
        deadline = time.monotonic() + (self.stop_timeout if timeout is None else timeout)
        while self.stopping and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.1)
        for m in list(self.stopping):
            self._kill(m)
        self._reap()
        for f in self._stderr_files:
            f.close()
        self._stderr_files = []

    # -- more for the demo and the tests ---------------------------------------------------------
    def pids(self) -> list[int]:
        """PIDs of every consumer still running (members and those stopping)."""
        self._reap()
        return [m.proc.pid for m in self.members + self.stopping]

    def log_paths(self) -> list[Path]:
        """Every consumer log this actuator has created, in start order."""
        return sorted(self.log_dir.glob("consumer-*.jsonl"), key=lambda p: int(p.stem.split("-")[1]))

    # -- internals -----------------------------------------------------------------------------
    def _start_one(self) -> Member:
        i = self._next
        self._next += 1
        log_path = self.log_dir / f"consumer-{i}.jsonl"
        err = open(self.log_dir / f"consumer-{i}.stderr", "ab")
        self._stderr_files.append(err)
        argv = [self.python, "-m", "workload", "consumer", *self.consumer_args, "--log-file", str(log_path)]
        proc = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        m = Member(i, proc, log_path, time.monotonic())
        self.members.append(m)
        return m

    @staticmethod
    def _is_ready(m: Member) -> bool:
        if not m.ready:
            try:
                with open(m.log_path, "rb") as f:
                    m.ready = b'"event": "start"' in f.read(4096)
            except OSError:
                return False
        return m.ready

    def _terminate(self, m: Member) -> None:
        self.members.remove(m)
        m.stopping_since = time.monotonic()
        self.stopping.append(m)
        try:
            m.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _kill(self, m: Member) -> None:
        try:
            m.proc.kill()
        except ProcessLookupError:
            pass
        try:
            m.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def _reap(self) -> None:
        now = time.monotonic()
        for pool in (self.members, self.stopping):
            for m in list(pool):
                rc = m.proc.poll()
                if rc is None and m.stopping_since is not None and now - m.stopping_since > self.stop_timeout:
                    self._kill(m)
                    rc = m.proc.poll()
                if rc is not None:
                    m.returncode = rc
                    pool.remove(m)
                    self.exited.append(m)

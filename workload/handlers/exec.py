"""The ``exec`` handler: one program run per message, like ``amqp-consume``.

The body goes to the program's stdin (text as is, anything else as JSON). Exit status 0 means
done; any other status means retry. Its stdout is the reply (JSON if it parses). The program
also sees ``QW_MESSAGE_ID``, ``QW_CLAIM_ID``, ``QW_CLAIM_COUNT`` and ``QW_QUEUE``. A program that
outlives the per-message timeout is killed with its whole process group.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading

from workload.handlers import DONE, RETRY, TIMEOUT, Context, Handler, Result, body_bytes, parse_reply
from workload.queues.base import Message

STDERR_TAIL = 400  # characters of stderr kept in the log when the program fails


class ExecHandler(Handler):
    kind = "exec"

    def __init__(self, argv: str | list[str]):
        self.argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
        if not self.argv:
            raise ValueError("exec handler needs a program to run, e.g. --exec 'my-program arg'")
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return "exec " + shlex.join(self.argv)

    def handle(self, message: Message, ctx: Context) -> Result:
        env = dict(
            os.environ,
            QW_MESSAGE_ID=message.id,
            QW_CLAIM_ID=ctx.claim_id or "",
            QW_CLAIM_COUNT="" if message.claim_count is None else str(message.claim_count),
            QW_QUEUE=ctx.queue,
        )
        try:
            # A session of its own, so a timeout kills the program and everything it started.
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            return Result(RETRY, error=f"cannot run {self.argv[0]!r}: {exc.strerror or exc}")
        with self._lock:
            self._running.add(proc)
        try:
            out, err = proc.communicate(body_bytes(message.body), timeout=ctx.timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            proc.communicate()
            return Result(TIMEOUT, error=f"killed after {ctx.timeout:g} s")
        finally:
            with self._lock:
                self._running.discard(proc)
        if proc.returncode == 0:
            return Result(DONE, reply=parse_reply(out))
        how = (
            f"killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exit status {proc.returncode}"
        )
        tail = err.decode(errors="replace").strip()[-STDERR_TAIL:]
        return Result(RETRY, error=f"{how}: {tail}" if tail else how)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def cancel(self) -> None:
        with self._lock:
            running = list(self._running)
        for proc in running:
            self._kill(proc)

"""Small helpers for the local stand-ins: free loopback ports, waiting, stopping by PID."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the caller binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_until(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    proc: subprocess.Popen | None = None,
    log_path: str | None = None,
) -> Any:
    """Poll ``check`` until it returns something true and return that; fail with the process's
    log tail if it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}{log_tail(log_path)}")
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s{log_tail(log_path)}")


def log_tail(path: str | None, lines: int = 30) -> str:
    if not path:
        return ""
    try:
        with open(path, errors="replace") as f:
            tail = f.readlines()[-lines:]
    except OSError:
        return ""
    return "\n--- last lines of " + path + " ---\n" + "".join(tail)


def json_records(text: str) -> list[dict]:
    """The JSON objects in a process's output or log, one a line (the workload's logs); other
    lines (text, a line being written) are skipped."""
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Stop one process we started, by its PID: SIGTERM, wait, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)

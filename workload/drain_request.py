"""The consumer's side of the drain protocol (see :mod:`workload.autoscale.drain`): watch this
server's metadata for the monitor's drain request.

The monitor sets the server metadata key ``qw_drain`` through Nova's API; the server reads its
own metadata from the metadata API (``/openstack/latest/meta_data.json``, field ``meta``), which
every OpenStack cloud serves to its servers at 169.254.169.254 (Nova caches it for
``[api] metadata_cache_expiration``, 15 s by default, so a request is seen within that plus the
watch interval). No credential is needed: the metadata API knows the server by its address.
The monitor calls a drain off by deleting the key (a scale-up); seen before the consumer is done,
the drain is taken back and the consumer claims again; seen too late, the server is off already
and the monitor counts it as leaving (:func:`workload.autoscale.drain.stranded`).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

from workload.autoscale.drain import DRAIN_KEY

METADATA_URL = "http://169.254.169.254/openstack/latest/meta_data.json"


def drain_deadline(meta_data: dict) -> float | None:
    """The drain deadline (Unix seconds) the monitor asked for, from a meta_data.json document;
    None if no drain is asked. A value that is not a number still asks for a drain (deadline 0:
    drain now)."""
    meta = meta_data.get("meta") or {}
    if DRAIN_KEY not in meta:
        return None
    try:
        return float(meta[DRAIN_KEY])
    except (TypeError, ValueError):
        return 0.0


def fetch_meta_data(url: str = METADATA_URL, timeout: float = 5.0) -> dict:
    """This server's meta_data.json from the metadata API."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


class DrainWatch:
    """Polls the metadata API every ``interval`` s in a daemon thread, until :meth:`stop`; calls
    ``on_drain(deadline)`` when the drain key appears and ``on_cancel()`` when it is gone again
    (the drain called off). ``deadline`` is the drain asked now (None: none), ``asked`` the last
    one ever asked. An unreachable metadata API is not an error and calls nothing off (a server
    booted without one never drains this way): the failures are counted in ``errors`` and the
    first one is passed to ``on_error``."""

    def __init__(
        self,
        on_drain: Callable[[float], None],
        url: str = METADATA_URL,
        interval: float = 5.0,
        fetch: Callable[[str], dict] = fetch_meta_data,
        on_error: Callable[[str], None] | None = None,
        on_cancel: Callable[[], None] | None = None,
    ):
        if not interval > 0:
            raise ValueError(f"interval={interval!r} is not allowed: a number of seconds above 0")
        self.url, self.interval = url, interval
        self._on_drain, self._fetch, self._on_error, self._on_cancel = on_drain, fetch, on_error, on_cancel
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.deadline: float | None = None
        self.asked: float | None = None

    def check(self) -> float | None:
        """One look at the metadata: the deadline if a drain is asked (``on_drain`` called when it
        is new, ``on_cancel`` when one asked before is gone)."""
        try:
            deadline = drain_deadline(self._fetch(self.url))
        except (OSError, ValueError, urllib.error.URLError) as exc:
            self.errors += 1
            if self.errors == 1 and self._on_error:
                self._on_error(f"metadata API {self.url}: {exc}")
            return None
        if deadline is not None and self.deadline is None:
            self.deadline = self.asked = deadline
            self._on_drain(deadline)
        elif deadline is None and self.deadline is not None:
            self.deadline = None
            if self._on_cancel:
                self._on_cancel()
        return deadline

    def start(self) -> DrainWatch:
        self._thread = threading.Thread(target=self._run, name="drain-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.interval + 1)

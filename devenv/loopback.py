"""What the local stand-in services (devenv.zaqar, devenv.sqs) share: an HTTP endpoint on
127.0.0.1, a readiness check, start/stop as a ``with`` block, and what `python -m devenv` prints.

    with LocalZaqar() as zaqar:      # any LoopbackService
        zaqar.url, zaqar.env(), zaqar.queue_options
"""

from __future__ import annotations

import abc

import requests

from devenv.procs import LOOPBACK


class LoopbackService(abc.ABC):
    """A service on 127.0.0.1:``port`` (None until started). A subclass starts and stops it, says
    which answer to ``GET health_path`` means ready, and how the workload reaches it."""

    health_path = "/"
    port: int | None = None

    @property
    def url(self) -> str:
        """The base URL (no trailing slash), e.g. ``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{LOOPBACK}:{self.port}"

    def healthy(self) -> bool:
        """True when ``GET health_path`` answers as the started service does."""
        try:
            return self._ready_status(requests.get(self.url + self.health_path, timeout=2).status_code)
        except requests.RequestException:
            return False

    @abc.abstractmethod
    def _ready_status(self, status: int) -> bool:
        """Whether ``status`` from ``GET health_path`` means the service is ready."""

    @abc.abstractmethod
    def start(self) -> LoopbackService:
        """Start the service; return it once :meth:`healthy`."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop what :meth:`start` started."""

    @property
    @abc.abstractmethod
    def queue_options(self) -> dict[str, str]:
        """Keyword options for ``workload.queues.open_queue(backend, name, **options)``."""

    @abc.abstractmethod
    def env(self) -> dict[str, str]:
        """Environment variables that point the workload at this service."""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

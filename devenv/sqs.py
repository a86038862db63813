"""A local SQS: moto's server (``ThreadedMotoServer``) on a free 127.0.0.1 port, for the tests and
for trying the SQS driver without AWS.

It runs in a thread of the calling process (moto is in the project's virtualenv). Credentials are
moto's dummy ones; nothing leaves the machine::

    with LocalSQS() as sqs:
        queue = open_queue("sqs", "jobs", **sqs.queue_options)
"""

from __future__ import annotations

from devenv.loopback import LoopbackService
from devenv.procs import LOOPBACK, free_port, wait_until

# moto accepts any credentials; these are placeholders, not secrets.
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
DEFAULT_REGION = "us-east-1"


class LocalSQS(LoopbackService):
    """moto's SQS endpoint on loopback. ``.url`` (``http://127.0.0.1:PORT``) is the ``endpoint_url`` for boto3.

    :param region: the region clients name (moto keeps queues per region).
    :param port: a fixed port; default a free one.
    """

    health_path = "/moto-api/"

    def __init__(self, region: str = DEFAULT_REGION, port: int | None = None):
        self.region = region
        self._requested_port = port
        self.port: int | None = None
        self._server = None

    @property
    def queue_options(self) -> dict[str, str]:
        """Keyword options for ``workload.queues.open_queue("sqs", name, **options)``."""
        return {"endpoint_url": self.url, "region": self.region, **DUMMY_CREDENTIALS}

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 and the workload at this server."""
        return {
            "QW_QUEUE_BACKEND": "sqs",
            "QW_SQS_ENDPOINT_URL": self.url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
        }

    def start(self) -> LocalSQS:
        """Start the server thread; return once it answers HTTP."""
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self.port = self._requested_port or free_port()
        self._server = ThreadedMotoServer(ip_address=LOOPBACK, port=self.port, verbose=False)
        self._server.start()
        wait_until(self.healthy, 30, "moto server")
        return self

    def _ready_status(self, status: int) -> bool:
        return status < 500

    def stop(self) -> None:
        """Stop the server thread."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.port = None

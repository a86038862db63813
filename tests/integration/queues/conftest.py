"""Fixtures for the queue-driver contract tests: the same tests run on every driver against the
real local Zaqar, moto's SQS server and a real RabbitMQ."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workload.queues import QueuePolicy, open_queue, retry

# Short claim times a test can wait for: Zaqar's minimum claim ttl is 60 s; SQS allows 1 s.
SHORT_TTL = {"zaqar": 60, "sqs": 2, "amqp": 1}
FAST_RETRY = retry.RetryPolicy(attempts=3, base=0.05, cap=0.2)


class FlakyProxy:
    """A real HTTP server on loopback that answers the first ``fail`` requests with a 503 and
    forwards the rest to ``upstream``. ``requests`` lists (method, path) of everything it got."""

    def __init__(self, upstream: str, fail: int, failure_body: dict, failure_headers: dict):
        self.upstream = upstream.split("://", 1)[1]
        self.fail = fail
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.requests.append((self.command, self.path))
                if proxy.fail > 0:
                    proxy.fail -= 1
                    data = json.dumps(failure_body).encode()
                    self.send_response(503)
                    for k, v in {**failure_headers, "Content-Length": str(len(data))}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# How each service words a 503, so the client parses it as that service's own error.
_FAILURES = {
    "zaqar": (
        {"title": "Service Unavailable", "description": "injected by the test proxy"},
        {"Content-Type": "application/json"},
    ),
    "sqs": (
        {"__type": "com.amazonaws.sqs#ServiceUnavailable", "message": "injected by the test proxy"},
        {"Content-Type": "application/x-amz-json-1.0", "x-amzn-query-error": "ServiceUnavailable;Receiver"},
    ),
    "amqp": (
        {"error": "service_unavailable", "reason": "injected by the test proxy"},
        {"Content-Type": "application/json"},
    ),
}
#: The option naming the HTTP endpoint the proxy stands in front of (amqp: the management API).
_HTTP_OPTION = {"zaqar": "url", "sqs": "endpoint_url", "amqp": "management_url"}


@pytest.fixture
def flaky_queue(backend, service, queue_name):
    """Factory: ``flaky_queue(fail=N)`` -> (queue through a proxy failing its next N requests,
    the proxy, the same queue reached directly)."""
    made = []

    def make(fail: int):
        name = queue_name("fl")
        direct = open_queue(backend, name, **service.queue_options)
        direct.ensure(QueuePolicy(max_claims=0))
        body, headers = _FAILURES[backend]
        proxy = FlakyProxy(service.url, 0, body, headers)
        opts = dict(service.queue_options)
        opts[_HTTP_OPTION[backend]] = proxy.url
        made.append((proxy, direct))
        q = open_queue(backend, name, retry_policy=FAST_RETRY, **opts)
        if backend == "sqs":
            q.url  # the SQS driver looks its queue URL up once; do that before the failures
        proxy.fail, proxy.requests[:] = fail, []
        return q, proxy, direct

    yield make
    for proxy, direct in made:
        proxy.close()
        try:
            direct.drop()
        except Exception:
            pass

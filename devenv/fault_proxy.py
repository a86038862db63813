"""A pass-through HTTP proxy on 127.0.0.1 in front of one real API, that fails chosen requests.

The bake's fault tests put one in front of each of Nova, Glance and Neutron (through
``<service>_endpoint_override`` in a clouds.yaml, see :func:`clouds_yaml_through`), so that the
bake talks to the real services and only the request a test picks fails::

    with FaultProxy(nova_url) as proxy:
        proxy.fail("POST", r"/servers/[^/]+/action$", body_contains="createImage", when="after")

``when="before"``: the request never reaches the service (as a dropped connection or an
overloaded API would); ``when="after"``: the service does it, the client gets the error (the
worst case: something was made that the client was not told about). Each rule fails its
``nth`` matching request (1 = the first) and then passes everything on.
"""

from __future__ import annotations

import http.client
import http.server
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


@dataclass
class Rule:
    """Fail the ``nth`` request matching method, path (regex, searched) and body substring."""

    method: str
    path: str
    body_contains: str | None = None
    nth: int = 1
    when: str = "before"
    status: int = 503
    seen: int = 0
    fired: bool = False

    def matches(self, method: str, path: str, body: bytes) -> bool:
        return (
            method == self.method
            and re.search(self.path, path) is not None
            and (self.body_contains is None or self.body_contains.encode() in body)
        )


@dataclass
class FaultProxy:
    """Forward every request to ``upstream`` (an http:// base URL); fail those the rules pick."""

    upstream: str
    rules: list[Rule] = field(default_factory=list)
    log: list[tuple[str, str, int]] = field(default_factory=list)

    def __post_init__(self):
        self.lock = threading.Lock()
        up = urlsplit(self.upstream)
        if up.scheme != "http" or up.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"upstream {self.upstream!r}: must be an http:// URL on 127.0.0.1")
        self._up = (up.hostname, up.port or 80)
        self._base_path = up.path.rstrip("/")
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        # A client that gave up (timeout, Ctrl-C) is not the proxy's error: no traceback for it.
        self.server.handle_error = lambda request, address: None

    @property
    def url(self) -> str:
        """The proxy's base URL, with the upstream's path (use it where the upstream URL was)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}{self._base_path}"

    def fail(
        self,
        method: str,
        path: str,
        *,
        body_contains: str | None = None,
        nth: int = 1,
        when: str = "before",
        status: int = 503,
    ) -> Rule:
        """Add a rule (see the module's docstring); returns it (``rule.fired`` tells if it did)."""
        if when not in ("before", "after"):
            raise ValueError(f"when={when!r}: must be 'before' or 'after'")
        rule = Rule(method.upper(), path, body_contains, nth, when, status)
        with self.lock:
            self.rules.append(rule)
        return rule

    def _pick(self, method: str, path: str, body: bytes) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if not rule.fired and rule.matches(method, path, body):
                    rule.seen += 1
                    if rule.seen == rule.nth:
                        rule.fired = True
                        return rule
        return None

    def _handler(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the test reads proxy.log instead
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rule = proxy._pick(self.command, self.path.split("?", 1)[0], body)
                if rule is not None and rule.when == "before":
                    return self._reply(rule.status, b'{"error": "injected by devenv.fault_proxy"}', {})
                conn = http.client.HTTPConnection(*proxy._up, timeout=600)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP}
                finally:
                    conn.close()
                if rule is not None:  # when == "after": done upstream, the client is told it failed
                    return self._reply(rule.status, b'{"error": "injected by devenv.fault_proxy"}', {})
                self._reply(resp.status, data, out)

            def _reply(self, status: int, data: bytes, headers: dict):
                with proxy.lock:
                    proxy.log.append((self.command, self.path, status))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not headers:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

        return Handler

    def __enter__(self) -> FaultProxy:
        threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def clouds_yaml_through(cloud_config: dict, proxies: dict[str, FaultProxy]) -> dict:
    """A clouds.yaml cloud entry like ``cloud_config`` whose ``service_type -> proxy`` endpoints
    go through the proxies (openstacksdk's ``<service>_endpoint_override``)."""
    out = dict(cloud_config)
    for service_type, proxy in proxies.items():
        out[f"{service_type}_endpoint_override"] = proxy.url
    return out

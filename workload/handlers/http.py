"""The ``http`` handler: POST each body to a URL; a 2xx answer means done, anything else retry.

The request carries ``Content-Type: application/json`` (text bodies go as ``text/plain``) and the
headers ``X-Message-Id`` and ``X-Claim-Count``. The response body is the reply (JSON if it
parses). The per-message timeout bounds the whole request.
"""

from __future__ import annotations

import threading

import requests

from workload.handlers import DONE, RETRY, TIMEOUT, Context, Handler, Result, body_bytes, parse_reply
from workload.queues.base import Message


class HttpHandler(Handler):
    kind = "http"

    def __init__(self, url: str):
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"http handler URL {url!r} is not allowed: it must start with http:// or https://"
            )
        self.url = url
        self._local = threading.local()  # one keep-alive session per worker thread

    def describe(self) -> str:
        return "http " + self.url

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def handle(self, message: Message, ctx: Context) -> Result:
        ctype = "text/plain; charset=utf-8" if isinstance(message.body, str) else "application/json"
        headers = {"Content-Type": ctype, "X-Message-Id": message.id}
        if message.claim_count is not None:
            headers["X-Claim-Count"] = str(message.claim_count)
        try:
            resp = self._session().post(
                self.url, data=body_bytes(message.body), headers=headers, timeout=ctx.timeout
            )
        except requests.Timeout:
            return Result(TIMEOUT, error=f"no answer within {ctx.timeout:g} s")
        except requests.RequestException as exc:
            return Result(RETRY, error=f"{type(exc).__name__}: {exc}"[:400])
        if 200 <= resp.status_code < 300:
            return Result(DONE, reply=parse_reply(resp.content))
        return Result(RETRY, error=f"HTTP {resp.status_code}: {resp.text.strip()[:300]}")

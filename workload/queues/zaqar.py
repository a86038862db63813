"""Zaqar (OpenStack Messaging v2) over HTTP.

Two ways to reach the service:

- **local / no Keystone**: ``url`` and ``project``; every request carries ``X-Project-ID``.
- **a real cloud**: a keystoneauth session from clouds.yaml / ``OS_CLOUD`` / ``OS_*`` (through
  openstacksdk's config loader) and the ``messaging`` endpoint of the catalog. Nothing touches the
  network until the first call.

Every request carries a UUID ``Client-ID`` (Zaqar requires one). Queue policy lives in the
queue's metadata (``_max_claim_count``, ``_dead_letter_queue``, ...), set with raw PUT/PATCH:
python-zaqarclient drops those keys on an existing queue.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Iterable, Sequence
from urllib.parse import quote

import requests

from workload.queues import batching, retry
from workload.queues.base import (MAX_DELETE_IDS, Claim, ClaimLost, InvalidInput, Message, QueueDriver, QueueError,
                                  QueueNotFound, QueuePolicy, QueueStats, ServiceUnavailable)
from workload.queues.limits import ZAQAR, encode_json


DEFAULT_LOCAL_PROJECT = "queue-workers-local"
JSON_PATCH = "application/openstack-messaging-v2.0-json-patch"
# Metadata keys the driver owns; others on the queue are left alone.
POLICY_KEYS = ("_default_message_ttl", "_default_message_delay", "_max_claim_count",
               "_dead_letter_queue", "_dead_letter_queue_messages_ttl")
_POST_ENVELOPE = len('{"messages":[]}')


class _Transport:
    """Sends one HTTP request and returns the response, or raises on a connection failure.

    Local: a ``requests.Session`` with the project header. Cloud: a keystoneauth ``Adapter`` for
    the ``messaging`` service, which finds the endpoint and the token on first use.
    """

    def __init__(self, url: str | None, project: str | None, adapter=None, timeout: float = 30.0):
        self.client_id = str(uuid.uuid4())
        self.adapter = adapter
        self.timeout = timeout
        self.base = (url or "").rstrip("/")
        self.headers = {"Client-ID": self.client_id, "Accept": "application/json"}
        if adapter is None:
            self.session = requests.Session()
            self.headers["X-Project-ID"] = project or DEFAULT_LOCAL_PROJECT
        self.where = self.base or "the cloud's messaging endpoint"

    def send(self, method: str, path: str, *, params=None, body=None,
             content_type: str = "application/json") -> requests.Response:
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            headers["Content-Type"] = content_type
        if self.adapter is None:
            try:
                return self.session.request(method, self.base + path, params=params, data=data,
                                            headers=headers, timeout=self.timeout)
            except requests.RequestException as exc:
                raise _ConnectionProblem(exc) from exc
        from keystoneauth1 import exceptions as ks_exc

        try:
            return self.adapter.request(path, method, params=params, data=data, headers=headers,
                                        raise_exc=False, connect_retries=0, timeout=self.timeout)
        except (ks_exc.ConnectionError, ks_exc.EndpointNotFound) as exc:
            raise _ConnectionProblem(exc) from exc
        except ks_exc.ClientException as exc:  # e.g. bad credentials when fetching a token
            raise QueueError(type(exc).__name__, str(exc), getattr(exc, "http_status", None)) from exc


class _ConnectionProblem(Exception):
    pass


def _cloud_adapter(cloud: str | None, region: str | None, url: str | None):
    """A keystoneauth Adapter for the messaging service from clouds.yaml / OS_CLOUD / OS_*."""
    import openstack.config
    from keystoneauth1 import adapter

    try:
        cfg = openstack.config.OpenStackConfig().get_one(cloud=cloud, region_name=region)
    except Exception as exc:  # openstacksdk raises several kinds for a missing or bad config
        raise QueueError("OpenStack configuration", f"cannot load cloud {cloud!r}: {exc}") from exc
    session = cfg.get_session()
    interface = cfg.get_interface() or "public"
    return adapter.Adapter(session, service_type="messaging", interface=interface,
                           region_name=cfg.get_region_name("messaging") or region,
                           endpoint_override=url or cfg.get_endpoint("messaging"))


class ZaqarQueue(QueueDriver):
    """One Zaqar queue.

    :param name: queue name (Zaqar allows letters, digits, ``-`` and ``_``, up to 64).
    :param url: Zaqar base URL (``http://host:port``). With no ``cloud`` and no OpenStack
        credentials this is a Zaqar without Keystone and ``project`` is sent as ``X-Project-ID``.
    :param project: project id for a Zaqar without Keystone (default ``queue-workers-local``);
        with ``url``, it selects that mode even when ``cloud`` is also set.
    :param cloud: a cloud of clouds.yaml (or ``OS_CLOUD`` / ``OS_*`` when None and ``url`` is
        None): authenticate with Keystone and find the endpoint in the catalog (``url``, if given
        without ``project``, overrides the endpoint).
    :param region: the region whose messaging endpoint to use.
    :param policy: the queue's policy (defaults of :class:`QueuePolicy`).
    :param retry_policy: backoff for safe operations; ``retry.NO_RETRY`` turns retries off.
    :param timeout: seconds per HTTP request.
    """

    limits = ZAQAR

    def __init__(self, name: str, *, url: str | None = None, project: str | None = None,
                 cloud: str | None = None, region: str | None = None,
                 policy: QueuePolicy | None = None, retry_policy: retry.RetryPolicy | None = None,
                 timeout: float = 30.0, _transport: _Transport | None = None):
        if not isinstance(name, str) or not name:
            raise InvalidInput("name", name, "a non-empty queue name")
        self.name = name
        self.policy = policy or QueuePolicy()
        self.policy.validate()
        self.retry_policy = retry_policy or retry.RetryPolicy()
        if _transport is not None:
            self._t = _transport
        elif url and (project or not cloud):  # X-Project-ID only means something without Keystone
            self._t = _Transport(url, project, timeout=timeout)
        else:
            self._t = _Transport(url, None, adapter=_cloud_adapter(cloud, region, url),
                                 timeout=timeout)
        self._path = f"/v2/queues/{quote(name, safe='')}"

    def __repr__(self) -> str:
        return f"ZaqarQueue({self.name!r} at {self._t.where})"

    @property
    def client_id(self) -> str:
        return self._t.client_id

    # -- HTTP ---------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, safe: bool, params=None, body=None,
                 content_type: str = "application/json", ok=(200, 201, 204)) -> requests.Response:
        """One API call with retries when ``safe``; non-``ok`` answers become QueueError."""
        what = f"{method} {path}"

        def attempt() -> requests.Response:
            try:
                resp = self._t.send(method, path, params=params, body=body, content_type=content_type)
            except _ConnectionProblem as exc:
                raise retry.Retryable(ServiceUnavailable(
                    "Connection failed", f"{what} to {self._t.where}: {exc}")) from None
            if resp.status_code >= 500:
                raise retry.Retryable(_service_error(resp, ServiceUnavailable))
            return resp

        resp = retry.call(attempt, self.retry_policy, safe=safe, what=what)
        if resp.status_code not in ok:
            raise _service_error(resp, QueueNotFound if resp.status_code == 404 else QueueError)
        return resp

    # -- the interface ---------------------------------------------------------------------------
    def ensure(self, policy: QueuePolicy | None = None) -> None:
        if policy is not None:
            policy.validate()
            self.policy = policy
        p = self.policy
        dlq_meta = {"_default_message_ttl": p.dead_letter_ttl}
        meta: dict[str, Any] = {"_default_message_ttl": p.message_ttl,
                                "_default_message_delay": p.delay}
        if p.max_claims:  # else the consumer dead-letters by itself (the DLQ exists either way)
            meta.update(_max_claim_count=p.max_claims, _dead_letter_queue=self.name + p.dead_letter_suffix,
                        _dead_letter_queue_messages_ttl=p.dead_letter_ttl)
        self.dead_letter_queue()._put_metadata(dlq_meta)
        self._put_metadata(meta)

    def _put_metadata(self, meta: dict[str, Any]) -> None:
        """Create the queue with ``meta``, or bring an existing queue's policy keys to ``meta``."""
        resp = self._request("PUT", self._path, safe=True, body=meta)
        if resp.status_code == 201:
            return
        current = self._request("GET", self._path, safe=True).json()
        ops = [{"op": "replace" if k in current else "add", "path": f"/metadata/{k}", "value": v}
               for k, v in meta.items() if current.get(k) != v]
        ops += [{"op": "remove", "path": f"/metadata/{k}"}
                for k in POLICY_KEYS if current.get(k) is not None and k not in meta]
        if ops:
            # A JSON patch with explicit values is idempotent: safe to retry.
            self._request("PATCH", self._path, safe=True, body=ops, content_type=JSON_PATCH)

    def metadata(self) -> dict[str, Any]:
        """The queue's metadata as the service holds it."""
        return self._request("GET", self._path, safe=True).json()

    def post(self, bodies: Sequence[Any], ttl: int | None = None, delay: int | None = None) -> list[str]:
        self.limits.check_post(ttl, delay)
        items = []
        for i, body in enumerate(bodies):
            item = {"body": body, "ttl": ttl if ttl is not None else self.policy.message_ttl}
            if delay is not None:
                item["delay"] = delay
            items.append(encode_json(item, i))
        # Zaqar counts the bytes of the whole request body against its post limit.
        sizes = [len(s.encode()) for s in items]
        ids: list[str] = []
        for rng in batching.split_batches(sizes, self.limits.batch_messages, self.limits.batch_bytes,
                                          envelope=_POST_ENVELOPE, separator=1):
            payload = '{"messages":[' + ",".join(items[i] for i in rng) + "]}"
            # Never retried: a POST whose answer was lost may have stored the messages, and a
            # second POST would store them again.
            resp = self._request("POST", self._path + "/messages", safe=False, body=payload)
            ids += [href.rsplit("/", 1)[-1] for href in resp.json()["resources"]]
        return ids

    def claim(self, limit: int = 10, ttl: int | None = None, grace: int | None = None) -> Claim | None:
        ttl = self.policy.claim_ttl if ttl is None else ttl
        grace = self.policy.claim_grace if grace is None else grace
        self.limits.check_claim(limit, ttl, grace)
        # Claim POST is retried. A retry after a lost answer leaves the first claim's messages
        # invisible until that claim expires (ttl), then they are delivered again: a delay, never
        # a loss or a duplicate beyond the at-least-once delivery consumers live with anyway.
        resp = self._request("POST", self._path + "/claims", safe=True, params={"limit": limit},
                             body={"ttl": ttl, "grace": grace})
        if resp.status_code == 204:
            return None
        claim_id = resp.headers.get("Location", "").rstrip("/").rsplit("/", 1)[-1]
        messages = [Message(id=m["id"] if "id" in m else m["href"].split("?")[0].rsplit("/", 1)[-1],
                            body=m.get("body"), age=float(m.get("age", 0)),
                            claim_count=m.get("claim_count"))
                    for m in resp.json().get("messages", [])]
        if not messages:
            return None
        if not claim_id:
            claim_id = _claim_id_from_href(resp.json()["messages"][0]["href"])
        claim = Claim(id=claim_id, messages=messages, ttl=ttl, grace=grace)
        claim._held = {m.id for m in messages}  # messages neither deleted nor released yet
        claim._to_release = set()
        return claim

    def renew(self, claim: Claim, ttl: int | None = None) -> None:
        ttl = claim.ttl if ttl is None else ttl
        grace = claim.grace or self.policy.claim_grace
        self.limits.check_claim(1, ttl, grace)
        try:
            self._request("PATCH", f"{self._path}/claims/{claim.id}", safe=True,
                          body={"ttl": ttl, "grace": grace})
        except QueueNotFound as exc:
            raise ClaimLost(exc.title, exc.description, exc.status) from None
        claim.ttl = ttl

    def release(self, claim: Claim, messages: Iterable[Message] | None = None) -> None:
        """Release the claim. Zaqar releases whole claims only, so releasing some of its messages
        while others are still being handled is deferred: the claim is released (making exactly
        those messages free) once every other message of it is deleted or released."""
        held = getattr(claim, "_held", {m.id for m in claim.messages})
        pending = getattr(claim, "_to_release", set())
        pending |= {m.id for m in messages} if messages is not None else set(held)
        claim._to_release, claim._held = pending, held
        if not held - pending:
            self._release_claim(claim)

    def _release_claim(self, claim: Claim) -> None:
        # DELETE of a claim is idempotent (a missing claim is a 204 too): safe to retry.
        self._request("DELETE", f"{self._path}/claims/{claim.id}", safe=True)
        claim._held = set()
        claim._to_release = set()

    def delete(self, message: Message, claim: Claim | None = None) -> None:
        params = {"claim_id": claim.id} if claim is not None else None
        try:
            self._request("DELETE", f"{self._path}/messages/{quote(message.id, safe='')}",
                          safe=True, params=params)
        except QueueError as exc:
            # 400 "claim does not exist or has expired" / "not currently claimed", 403 "claimed"
            # (by someone else now): our claim is gone and the message may be with another consumer.
            if claim is not None and exc.status in (400, 403, 404):
                raise ClaimLost(exc.title, exc.description, exc.status) from None
            raise
        self._settled(claim, [message.id])

    def delete_many(self, messages: Sequence[Message], claim: Claim | None = None) -> None:
        """Delete handled messages with one request per 20 ids (``DELETE .../messages?ids=a,b``).

        The service deletes listed messages whoever holds them: the caller has handled them, so a
        claim that expired meanwhile costs nothing but a duplicate the other holder may still run.
        """
        ids = [m.id for m in messages]
        for start in range(0, len(ids), MAX_DELETE_IDS):
            # The commas must stay literal: Zaqar 23 answers 204 to percent-encoded commas
            # (what `params=` would send) and deletes nothing. Deleting twice is safe to retry.
            query = ",".join(quote(i, safe="") for i in ids[start:start + MAX_DELETE_IDS])
            self._request("DELETE", f"{self._path}/messages?ids={query}", safe=True)
        self._settled(claim, ids)

    def _settled(self, claim: Claim | None, ids: Iterable[str]) -> None:
        """Forget deleted messages of a claim; release it if only messages to give back remain."""
        if claim is None or not hasattr(claim, "_held"):
            return
        claim._held.difference_update(ids)
        claim._to_release.difference_update(ids)
        if claim._to_release and not claim._held - claim._to_release:
            self._release_claim(claim)

    def stats(self) -> QueueStats:
        """Free, claimed and total from ``GET .../stats``.

        The redis driver answers 503 for a queue with expired messages or claims until its garbage
        collection has run; that is retried like any 5xx of a GET, and surfaces as
        :class:`ServiceUnavailable` if it outlasts the retries. Right after the service moved a
        message to the dead-letter queue it can report ``free`` below zero; it is shown as 0.
        """
        try:
            doc = self._request("GET", self._path + "/stats", safe=True).json()["messages"]
        except QueueNotFound:
            return QueueStats(0, 0, 0, None)
        oldest = doc.get("oldest")
        free, claimed = max(0, int(doc.get("free", 0))), max(0, int(doc.get("claimed", 0)))
        return QueueStats(free=free, claimed=claimed, total=max(free + claimed, int(doc.get("total", 0))),
                          oldest_age=float(oldest["age"]) if oldest else None)

    def purge(self) -> None:
        """Delete the free messages. Zaqar's purge leaves messages under a live claim to their
        consumer (they are deleted or freed when the claim ends)."""
        # Purging twice is purging once: safe to retry.
        self._request("POST", self._path + "/purge", safe=True, body={"resource_types": ["messages"]})

    def drop(self) -> None:
        for q in (self, self.dead_letter_queue()):
            q._request("DELETE", q._path, safe=True)

    def dead_letter_queue(self) -> "ZaqarQueue":
        dlq_policy = self.policy.for_dead_letters()
        return ZaqarQueue(self.name + self.policy.dead_letter_suffix, policy=dlq_policy,
                          retry_policy=self.retry_policy, _transport=self._t)


def _claim_id_from_href(href: str) -> str:
    from urllib.parse import parse_qs, urlparse
    return parse_qs(urlparse(href).query).get("claim_id", [""])[0]


def _service_error(resp: requests.Response, cls: type[QueueError]) -> QueueError:
    """The service's own title and description (Zaqar answers ``{"title", "description"}``)."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict) and ("title" in doc or "description" in doc):
        title, desc = str(doc.get("title", "")), str(doc.get("description", ""))
    else:
        title, desc = f"HTTP {resp.status_code} {resp.reason or ''}".strip(), resp.text[:500]
    return cls(title or f"HTTP {resp.status_code}", desc, resp.status_code)

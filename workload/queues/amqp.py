"""RabbitMQ (AMQP 0-9-1) through aio-pika, on one event-loop thread per connection.

**Why aio-pika.** The consumer calls a driver from several threads at once (claim loop, workers
posting replies, the settler deleting and releasing, the renewer). pika's and kombu's (py-amqp)
connections are not thread-safe, and a blocking client only sends heartbeats while some thread
is inside it, so a long handler could let the broker close the connection. aio-pika (on aiormq)
runs the connection on an asyncio loop in a thread of its own: heartbeats are answered whatever
the handlers do, every other thread hands it coroutines (``run_coroutine_threadsafe``), publisher
confirms of a batch are awaited together, and it is well kept (aio-pika 10, aiormq 7).

**The mapping onto the interface** (Zaqar's vocabulary):

- a **queue** is a quorum queue (``x-queue-type: quorum``, replicated, with delivery counts);
  its dead-letter pair is a direct exchange ``NAME-dlx`` bound to the quorum queue ``NAME-dlq``.
  Posts go through a direct exchange of the queue's own, ``NAME-in`` (the dead-letter queue's:
  ``NAME-dlx``), not the default exchange: write permission on ``amq.default`` lets a user publish
  to every queue, on ``NAME-in`` only to this one (least privilege per role). A queue ensured
  before it had ``NAME-in`` is still posted to through the default exchange.
- the **policy** (message TTL, dead-letter exchange, ``delivery-limit``, at-least-once
  dead-lettering) is a RabbitMQ *policy* ``qw.NAME`` set through the management API, not queue
  arguments: arguments can never change on an existing queue, policies can (so ``ensure`` can
  change ``max_claims`` like on Zaqar and SQS). ``ensure`` therefore needs the management API and
  a user with the ``policymaker`` (or ``administrator``) tag; consumers and producers do not.
- **max claims** = ``delivery-limit`` = ``max_claims - 1`` returns: a quorum queue counts every
  return (nack with requeue, or the consumer's channel closing) and dead-letters a message once
  it was delivered ``max_claims`` times. Dead-lettering is ``at-least-once`` (with
  ``overflow: reject-publish``, which it requires), so a message is never dropped between the two
  queues. A message older than the TTL is dead-lettered too (reason ``expired``), not dropped.
- a **claim** is the deliveries this client holds unacknowledged: one ``basic.consume`` per queue
  with a prefetch (``prefetch``, default 20; the consumer CLI sets it to what a consumer keeps in
  hand), and ``claim(limit)`` takes up to ``limit`` deliveries from what the broker pushed.
  **renew** has nothing to extend: a delivery stays ours until acked, nacked or our channel
  closes; renew raises :class:`ClaimLost` if that happened. RabbitMQ's ``consumer_timeout``
  (default 30 min; ``consumer_timeout`` in rabbitmq.conf) is the one limit: a delivery held
  longer makes the broker close the channel and requeue it. Set it above the longest handler
  (``--timeout``); the local broker (devenv.rabbitmq) takes it as an option.
- **release** = ``basic.nack(requeue=True)`` (counts as a return), **delete** = ``basic.ack``.
  A delivery of a connection that has since been lost raises :class:`ClaimLost`: the broker has
  already requeued it for someone else (at least once, never lost).
- **post** publishes each body persistent, ``mandatory`` (a missing queue is an error, not a
  silent drop) on a channel with publisher confirms: ``post`` returns once the broker has
  confirmed every message of the batch. A post is never retried (the broker may have it).
- **heartbeats**: ``heartbeat`` seconds (default 20; ``?heartbeat=N`` in the URL wins), answered
  by the loop thread while handlers run in others. **Reconnect**: a lost connection is re-opened
  on the next call with the retry policy's backoff; a queue's consumer is registered again at its
  next claim; what was unacknowledged is redelivered by the broker.
- **stats**: ``free`` is the ready count (``queue.declare`` passive, exact, AMQP) plus deliveries
  this client holds but has not handed out; ``claimed`` the broker's unacknowledged count from
  the management API (refreshed every ``collect_statistics_interval``, 5 s by default), at least
  what this client itself holds; ``oldest_age`` is the management API's
  ``head_message_timestamp`` where the broker reports it (classic queues only in 3.10), else None:
  no AMQP call can read the head of a queue without delivering it (which a quorum queue counts
  as a delivery). The monitor then scales on counts, as with SQS.

**URLs and credentials** (:mod:`workload.queues.amqp_address`): ``amqp://`` or ``amqps://``
(TLS, verified against the system CAs or ``?cafile=``), user and password in the URL, from
``QW_AMQP_USER`` / ``QW_AMQP_PASSWORD``, or from a clouds.yaml-like ``amqp.yaml`` entry; the
management API is ``management_url`` (default ``http(s)://HOST:15672`` / ``15671``) with the
same credentials. A password never appears in a repr, a log line or an error.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import re
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, SupportsFloat, TypeVar
from urllib.parse import quote, urlsplit

from workload.queues import batching, retry
from workload.queues.amqp_address import BrokerAddress, resolve, tls_verify
from workload.queues.base import (
    Claim,
    ClaimLost,
    InvalidInput,
    Message,
    QueueDriver,
    QueueError,
    QueueNotFound,
    QueuePolicy,
    QueueStats,
    ServiceUnavailable,
)
from workload.queues.limits import AMQP, encode_json

# aio-pika is imported where a connection is made: importing the driver needs no broker library
if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection

T = TypeVar("T")

DEFAULT_PREFETCH = 20
DEFAULT_HEARTBEAT = 20
DEFAULT_STATS_INTERVAL = 5.0  # RabbitMQ's collect_statistics_interval and quorum_tick_interval
POSTED_AT = "x-qw-posted-at"  # header: wall-clock seconds of the post (AMQP timestamps are whole s)
MAX_REMEMBERED = 10_000  # given-back receipts kept to answer a late delete with ClaimLost
LINGER = 0.02  # seconds a claim waits for one more delivery of a burst before it returns


# -- one connection on its own loop thread -------------------------------------------------------
class _Link:
    """One AMQP connection, its work channel (publisher confirms) and the consumers on it, run on
    an asyncio loop in a daemon thread. ``generation`` grows on every (re)connect: deliveries of
    an older generation are gone (the broker requeued them)."""

    def __init__(self, address: BrokerAddress, heartbeat: int, connect_timeout: float):
        self.address = address
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.generation = 0
        self._conn: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._consumers: dict[str, _Inbox] = {}
        self.exchanges: dict[str, tuple[int, str]] = {}  # exchange a queue is posted through, per generation
        self._lock: asyncio.Lock | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="amqp-io", daemon=True)
        self._thread.start()

    def run(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float) -> T:
        """Run the coroutine ``make()`` on the loop; wait at most ``timeout`` seconds."""
        future = asyncio.run_coroutine_threadsafe(make(), self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise ServiceUnavailable(
                "Timed out", f"no answer from {self.address} within {timeout:.0f} s"
            ) from None

    async def channel(self) -> AbstractChannel:
        """The work channel, connecting first if needed (one attempt; callers retry)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if (
                self._channel is not None
                and not self._channel.is_closed
                and self._conn is not None
                and not self._conn.is_closed
            ):
                return self._channel
            await self._close()
            import aio_pika

            # a heartbeat in the URL's query (?heartbeat=N) wins over the option; aio-pika takes
            # such keywords (any type) as the URL's query parameters
            options: dict[str, Any] = (
                {} if "heartbeat=" in urlsplit(self.address.url).query else {"heartbeat": self.heartbeat}
            )
            conn = await asyncio.wait_for(
                aio_pika.connect(
                    self.address.url,
                    timeout=self.connect_timeout,
                    client_properties={"connection_name": f"queue-workers-{os.getpid()}"},
                    **options,
                ),
                self.connect_timeout,
            )
            self._conn = conn
            # on_return_raises: an unroutable message (no such queue) fails its publish
            channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
            self._channel = channel
            # Consumers of the old connection resume at their queue's next claim (inbox), after
            # a passive declare on a control channel: a queue dropped meanwhile must not take
            # the new work channel down with it.
            self.generation += 1
            return channel

    async def control_channel(self) -> AbstractChannel:
        """A short-lived channel for calls whose failure closes a channel (passive declares,
        deletes): an error there must not cost the work channel its deliveries."""
        await self.channel()
        conn = self._conn
        assert conn is not None, "channel() returned, so it is connected (nothing awaited since)"
        return await conn.channel(publisher_confirms=False)

    async def inbox(self, queue: str, prefetch: int) -> _Inbox:
        """The consumer of ``queue`` on this connection, started on first use."""
        channel = await self.channel()
        inbox = self._consumers.get(queue)
        if inbox is None:
            inbox = self._consumers[queue] = _Inbox(queue, prefetch)
        if inbox.generation != self.generation:
            await inbox.start(channel, self.generation)
        return inbox

    async def _close(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and not conn.is_closed:
            try:
                await conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection: nothing to save
                pass

    def close(self) -> None:
        """Close the connection (unacknowledged deliveries go back to their queues)."""
        try:
            self.run(self._close, 10)
        except QueueError:
            pass


class _Inbox:
    """Deliveries the broker pushed for one queue (within the prefetch) not yet handed out."""

    def __init__(self, queue: str, prefetch: int):
        self.queue = queue
        self.prefetch = prefetch
        self.generation = 0
        self.ready: asyncio.Queue = asyncio.Queue()

    async def start(self, channel, generation: int) -> None:
        self.ready = asyncio.Queue()  # deliveries of the old channel are void
        self.generation = generation
        await channel.set_qos(prefetch_count=self.prefetch)
        self._queue = await channel.get_queue(self.queue, ensure=False)
        self._tag = await self._queue.consume(self.ready.put, no_ack=False)

    async def cancel(self, generation: int) -> None:
        """Stop consuming (what was pushed and not handed out goes back), e.g. before a delete."""
        if self.generation == generation:
            try:
                await self._queue.cancel(self._tag)
            except Exception:  # noqa: BLE001 - a channel already gone has no consumer left to cancel
                pass
        self.generation = -1

    async def take(self, limit: int, wait: float) -> list:
        try:
            first = await asyncio.wait_for(self.ready.get(), wait)
        except TimeoutError:
            return []
        got = [first]
        while len(got) < limit:  # the rest of a burst arrives within milliseconds: linger briefly
            try:
                got.append(
                    self.ready.get_nowait()
                    if not self.ready.empty()
                    else await asyncio.wait_for(self.ready.get(), LINGER)
                )
            except TimeoutError:
                break
        return got


def _queue_error(exc: BaseException, address: BrokerAddress, what: str) -> Exception:
    """Our error for an aio-pika/aiormq one; a :class:`retry.Retryable` where another try may help."""
    import aiormq.exceptions as ae

    text = str(exc) or type(exc).__name__
    text = text.replace(address.password, "***") if address.password else text
    if isinstance(exc, (ae.ProbableAuthenticationError, ae.AuthenticationError)) or "ACCESS_REFUSED" in text:
        return QueueError(
            "ACCESS_REFUSED", f"{what} on {address}: the broker refused user {address.user!r}: {text}", 403
        )
    if isinstance(exc, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in type(exc).__name__:
        # a certificate the client does not trust will not become trusted by retrying
        return QueueError(
            "TLS failed", f"{what} on {address}: {text} (a private CA: add ?cafile=PATH to the amqps:// URL)"
        )
    if isinstance(exc, ae.ChannelAccessRefused):
        return QueueError("ACCESS_REFUSED", f"{what}: {text}", 403)
    if isinstance(exc, ae.ChannelNotFoundEntity):
        return QueueNotFound("NOT_FOUND", f"{what}: {text}", 404)
    if isinstance(exc, ae.ChannelPreconditionFailed):
        return QueueError("PRECONDITION_FAILED", f"{what}: {text}", 406)
    if isinstance(exc, (ae.DeliveryError, ae.PublishError)):
        return QueueError("NOT_DELIVERED", f"{what}: the broker did not take the message ({text})")
    if isinstance(exc, QueueError):
        return exc
    return retry.Retryable(ServiceUnavailable("Connection failed", f"{what} on {address}: {text}"))


# -- the driver ------------------------------------------------------------------------------------
class AMQPQueue(QueueDriver):
    """One RabbitMQ quorum queue (and its dead-letter pair).

    :param name: queue name (up to 255 bytes; ``amq.`` is reserved by the broker).
    :param url: ``amqp://`` or ``amqps://`` URL (default ``$QW_AMQP_URL``).
    :param management_url: the management HTTP API (default ``$QW_AMQP_MANAGEMENT_URL``, else the
        URL's host on 15672, or 15671 for amqps); used by ``ensure``/``drop`` (policies) and
        ``stats`` (unacknowledged count).
    :param policy: the queue's policy (defaults of :class:`QueuePolicy`; ``delay`` must be 0).
    :param prefetch: deliveries the broker may push ahead to this client (1..1000).
    :param heartbeat: AMQP heartbeat seconds (1..600).
    :param wait_seconds: how long a claim waits for a first delivery (0..20), like an SQS long poll.
    :param retry_policy: backoff for safe operations and reconnects; posts are never retried.
    :param timeout: seconds any one operation may take.
    :param stats_interval: how old the broker's management figures may be (its
        ``collect_statistics_interval``, and ``quorum_tick_interval`` for quorum queues: 5 s by
        default); ``stats`` right after this client settled deliveries waits that long, so that it
        counts them as settled.
    """

    limits = AMQP

    def __init__(
        self,
        name: str,
        *,
        url: str | None = None,
        management_url: str | None = None,
        policy: QueuePolicy | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        heartbeat: int = DEFAULT_HEARTBEAT,
        wait_seconds: float = 1.0,
        retry_policy: retry.RetryPolicy | None = None,
        timeout: float = 30.0,
        stats_interval: float = DEFAULT_STATS_INTERVAL,
        _link=None,
    ):
        if not isinstance(name, str) or not name or len(name.encode()) > 255:
            raise InvalidInput("name", name, "a non-empty queue name of at most 255 bytes")
        for key, value, lo, hi in (("prefetch", prefetch, 1, 1000), ("heartbeat", heartbeat, 1, 600)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise InvalidInput(key, value, f"a whole number from {lo} to {hi}")
        if not 0 <= wait_seconds <= 20:
            raise InvalidInput("wait_seconds", wait_seconds, "a number from 0 to 20")
        if not 0 <= stats_interval <= 60:
            raise InvalidInput("stats_interval", stats_interval, "a number of seconds from 0 to 60")
        self.stats_interval = stats_interval
        self._settled_at = -math.inf
        self.name = name
        self.policy = policy or QueuePolicy(delay=0)
        self._check_policy(self.policy)
        self.prefetch = prefetch
        self.wait_seconds = wait_seconds
        self.retry_policy = retry_policy or retry.RetryPolicy()
        self.timeout = timeout
        if _link is None:
            address = resolve(url, management_url)
            _link = _Link(address, heartbeat, connect_timeout=min(10.0, timeout))
        self._link = _link
        self.address: BrokerAddress = _link.address
        self.post_exchange = name + "-in"  # the dead-letter queue's driver posts through NAME-dlx
        self._held: dict[str, tuple[int, Any]] = {}  # receipt -> (generation, delivery)
        self._lost: dict[str, None] = {}  # receipts we gave back (oldest first, bounded)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AMQPQueue({self.name!r} at {self.address})"

    def _check_policy(self, policy: QueuePolicy) -> None:
        policy.validate()
        if policy.delay:
            raise InvalidInput(
                "delay",
                policy.delay,
                "0 on amqp (RabbitMQ has no delayed delivery without the delayed-message plugin)",
            )

    @property
    def dead_letter_name(self) -> str:
        return self.name + self.policy.dead_letter_suffix

    # -- calls ----------------------------------------------------------------------------------
    def _do(self, what: str, make: Callable[[], Awaitable[T]], *, safe: bool) -> T:
        """Run one operation on the loop, translating errors; retried with backoff when ``safe``."""

        def attempt() -> T:
            async def wrapped() -> T:
                try:
                    return await make()
                except (QueueError, retry.Retryable):
                    raise
                except Exception as exc:  # noqa: BLE001 - every client error becomes the service's own
                    raise _queue_error(exc, self.address, what) from None

            return self._link.run(wrapped, self.timeout)

        return retry.call(attempt, self.retry_policy, safe=safe, what=what)

    def _management(self, method: str, path: str, *, missing_ok: bool = False, **kw):
        """One management API call with the AMQP user's credentials (retried on 5xx/connection)."""
        import requests

        url = self.address.management_url + "/api" + path

        def attempt():
            try:
                resp = requests.request(
                    method,
                    url,
                    auth=(self.address.user, self.address.password),
                    timeout=self.timeout,
                    verify=tls_verify(self.address),  # the URL's private CA, if it names one
                    **kw,
                )
            except requests.RequestException as exc:
                raise retry.Retryable(
                    ServiceUnavailable(
                        "Connection failed",
                        f"management API {self.address.management_url}: {type(exc).__name__}",
                    )
                ) from exc
            if resp.status_code >= 500:
                raise retry.Retryable(
                    ServiceUnavailable(
                        "Management API error", f"{method} {path}: {resp.status_code}", resp.status_code
                    )
                )
            return resp

        resp = retry.call(attempt, self.retry_policy, safe=True, what=f"management {method}")
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code >= 400:
            try:
                reason = resp.json().get("reason", resp.text)
            except ValueError:
                reason = resp.text
            title = {401: "ACCESS_REFUSED", 403: "ACCESS_REFUSED", 404: "NOT_FOUND"}.get(
                resp.status_code, "Refused"
            )
            hint = (
                " (setting policies needs a user tagged policymaker or administrator)"
                if resp.status_code in (401, 403)
                else ""
            )
            raise QueueError(title, f"management {method} {path}: {reason}{hint}", resp.status_code)
        return resp

    def _vhost_path(self, kind: str, name: str) -> str:
        return f"/{kind}/{quote(self.address.vhost, safe='')}/{quote(name, safe='')}"

    # -- the interface ----------------------------------------------------------------------------
    def ensure(self, policy: QueuePolicy | None = None) -> None:
        """Declare the dead-letter exchange and queue, the work queue (quorum), and set the
        policy ``qw.NAME`` (TTL, dead-lettering, delivery limit) through the management API."""
        if policy is not None:
            self._check_policy(policy)
            self.policy = policy
        p, dlq, dlx = self.policy, self.dead_letter_name, self.name + "-dlx"

        async def declare():
            import aio_pika

            ch = await self._link.control_channel()
            try:
                await ch.declare_queue(dlq, durable=True, arguments={"x-queue-type": "quorum"})
                await ch.declare_queue(self.name, durable=True, arguments={"x-queue-type": "quorum"})
                ex = await ch.declare_exchange(dlx, aio_pika.ExchangeType.DIRECT, durable=True)
                queue = await ch.get_queue(dlq, ensure=False)
                await queue.bind(ex, routing_key=dlq)
                inbound = await ch.declare_exchange(
                    self.name + "-in", aio_pika.ExchangeType.DIRECT, durable=True
                )
                work = await ch.get_queue(self.name, ensure=False)
                await work.bind(inbound, routing_key=self.name)
            finally:
                if not ch.is_closed:
                    await ch.close()

        self._do("declare", declare, safe=True)
        work = {
            "message-ttl": p.message_ttl * 1000,
            "dead-letter-exchange": dlx,
            "dead-letter-routing-key": dlq,
            "dead-letter-strategy": "at-least-once",
            "overflow": "reject-publish",
        }
        if p.max_claims:
            work["delivery-limit"] = p.max_claims - 1
        self._set_policy(self.name, work)
        self._set_policy(dlq, {"message-ttl": p.dead_letter_ttl * 1000})

    def _set_policy(self, queue: str, definition: dict[str, Any]) -> None:
        self._management(
            "PUT",
            self._vhost_path("policies", "qw." + queue),
            json={
                "pattern": "^" + re.escape(queue) + "$",
                "apply-to": "queues",
                "priority": 100,
                "definition": definition,
            },
        )

    def post(self, bodies: Sequence[Any], ttl: int | None = None, delay: int | None = None) -> list[str]:
        """Publish persistent messages, ``limits.batch_messages`` at a time, each batch's
        publisher confirms awaited together; return the message ids. Never retried."""
        self.limits.check_post(ttl, delay)
        texts = [encode_json(b, i).encode() for i, b in enumerate(bodies)]
        ids = [uuid.uuid4().hex for _ in texts]
        expiration = None if ttl is None else ttl  # seconds; aio-pika sends milliseconds
        for rng in batching.split_batches(
            [len(t) for t in texts], self.limits.batch_messages, self.limits.batch_bytes
        ):
            self._do(
                "publish",
                functools.partial(self._publish, [(ids[i], texts[i]) for i in rng], self.name, expiration),
                safe=False,
            )
        return ids

    async def _publish(self, items: list[tuple[str, bytes]], routing_key: str, expiration) -> None:
        import aio_pika

        channel = await self._link.channel()
        now = time.time()
        messages = [
            aio_pika.Message(
                body,
                message_id=mid,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                timestamp=int(now),
                expiration=expiration,
                headers={POSTED_AT: repr(now)},
            )
            for mid, body in items
        ]
        exchange = await self._post_exchange(channel)
        results = await asyncio.gather(
            *(exchange.publish(m, routing_key=routing_key, mandatory=True) for m in messages),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            import aio_pika.exceptions as ape

            posted = len(results) - len(failed)
            if all(isinstance(r, ape.DeliveryError) for r in failed):
                raise QueueNotFound(
                    "NO_ROUTE",
                    f"queue {routing_key!r} does not exist on {self.address} "
                    f"({posted} of {len(results)} messages of this batch were taken)",
                    404,
                )
            raise failed[0]

    async def _post_exchange(self, channel):
        """The exchange posts go through: ``post_exchange`` if it exists (asked once per connection,
        passively on a control channel: publishing to a missing exchange would close the work
        channel), else the default exchange."""
        import aiormq.exceptions

        known = self._link.exchanges.get(self.name)
        if known is None or known[0] != self._link.generation:
            ch = await self._link.control_channel()
            try:
                await ch.get_exchange(self.post_exchange, ensure=True)
                name = self.post_exchange
            except aiormq.exceptions.ChannelNotFoundEntity:  # ensured before it had an exchange of its own
                name = ""
            finally:
                if not ch.is_closed:
                    await ch.close()
            known = self._link.exchanges[self.name] = (self._link.generation, name)
        return await channel.get_exchange(known[1], ensure=False) if known[1] else channel.default_exchange

    def claim(self, limit: int = 10, ttl: int | None = None, grace: int | None = None) -> Claim | None:
        ttl = self.policy.claim_ttl if ttl is None else ttl
        grace = 0 if grace is None else grace  # no claim expiry on AMQP: checked for the contract
        self.limits.check_claim(limit, ttl, grace)

        async def take():
            await self._check_exists()
            inbox = await self._link.inbox(self.name, self.prefetch)
            return inbox.generation, await inbox.take(limit, self.wait_seconds)

        generation, deliveries = self._do("claim", take, safe=True)
        if not deliveries:
            return None
        now = time.time()
        messages = []
        for d in deliveries:
            receipt = f"{generation}:{d.delivery_tag}"
            with self._lock:
                self._held[receipt] = (generation, d)
            messages.append(_message(d, receipt, now))
        claim = Claim(id=str(uuid.uuid4()), messages=messages, ttl=ttl, grace=grace)
        claim._generation = generation
        return claim

    async def _check_exists(self) -> None:
        """Consuming from a missing queue closes the channel: ask on a control channel first."""
        if (
            self._link._consumers.get(self.name) is not None
            and self._link._consumers[self.name].generation == self._link.generation
        ):
            return
        ch = await self._link.control_channel()
        try:
            await ch.declare_queue(self.name, passive=True)
        finally:
            if not ch.is_closed:
                await ch.close()

    def _receipts(self, claim: Claim | None, messages: Iterable[Message] | None) -> list[str]:
        source = messages if messages is not None else (claim.messages if claim else [])
        return [m.receipt for m in source if m.receipt]

    def _settle(self, receipts: list[str], how: str, missing_ok: bool) -> None:
        """ack or nack(requeue) the deliveries of ``receipts`` on the loop. Each receipt is taken
        out of ``_held`` under the lock first, so two threads never settle one delivery twice
        (a second ack of a tag would make the broker close the channel)."""
        live, lost = [], []
        with self._lock:
            for r in receipts:
                held = self._held.pop(r, None)
                if held is None:
                    if r in self._lost or not missing_ok:
                        lost.append(r)
                elif held[0] != self._link.generation:
                    lost.append(r)
                else:
                    live.append((r, held[1]))

        async def settle():
            for _, d in live:
                await (d.ack() if how == "ack" else d.nack(requeue=True))

        if live:
            self._settled_at = time.monotonic()
            try:
                self._do(how, settle, safe=False)
            except QueueError:
                lost += [r for r, _ in live]
            if how != "ack":
                self._forget_later(r for r, _ in live)
        if lost:
            raise ClaimLost(
                "Delivery lost",
                f"{len(lost)} message(s) of {self.name!r}: the connection "
                "they came on was closed or they were given back; the broker delivers "
                "them again",
            )

    def _forget_later(self, receipts: Iterable[str]) -> None:
        """Remember given-back receipts (so a late delete says ClaimLost), the newest 10,000."""
        with self._lock:
            for r in receipts:
                self._lost[r] = None
            while len(self._lost) > MAX_REMEMBERED:
                del self._lost[next(iter(self._lost))]

    def renew(self, claim: Claim, ttl: int | None = None) -> None:
        """Nothing to extend (a delivery is ours until settled); raises :class:`ClaimLost` if the
        connection it came on is gone or it was given back."""
        ttl = claim.ttl if ttl is None else ttl
        self.limits.check_claim(1, ttl, 0)
        with self._lock:
            gone = [
                r
                for r in self._receipts(claim, None)
                if r in self._lost or (r in self._held and self._held[r][0] != self._link.generation)
            ]
        if gone or getattr(claim, "_generation", self._link.generation) != self._link.generation:
            raise ClaimLost(
                "Delivery lost", f"claim {claim.id}: its connection was closed or it was given back"
            )
        claim.ttl = ttl

    def release(self, claim: Claim, messages: Iterable[Message] | None = None) -> None:
        with self._lock:
            receipts = [r for r in self._receipts(claim, messages) if r in self._held]
        self._settle(receipts, "nack", missing_ok=True)

    def delete(self, message: Message, claim: Claim | None = None) -> None:
        if not message.receipt:
            raise InvalidInput("message.receipt", message.receipt, "a message claimed from this queue")
        self._settle([message.receipt], "ack", missing_ok=True)

    def delete_many(self, messages: Sequence[Message], claim: Claim | None = None) -> None:
        """Ack several deliveries in one loop call."""
        self._settle(self._receipts(None, messages), "ack", missing_ok=True)

    def stats(self) -> QueueStats:
        async def ready():
            ch = await self._link.control_channel()
            try:
                q = await ch.declare_queue(self.name, passive=True)
                return q.declaration_result.message_count
            finally:
                if not ch.is_closed:
                    await ch.close()

        try:
            free = self._do("stats", ready, safe=True)
        except QueueNotFound:
            return QueueStats(0, 0, 0, None)
        lag = self._settled_at + self.stats_interval - time.monotonic()
        if lag > 0:  # the broker's figures do not show what this client just settled yet
            time.sleep(lag)
        own_buffered = self._buffered()
        with self._lock:
            own_claimed = sum(1 for g, _ in self._held.values() if g == self._link.generation)
        info = self._management("GET", self._vhost_path("queues", self.name), missing_ok=True)
        doc = info.json() if info is not None else {}
        unacked = max(int(doc.get("messages_unacknowledged") or 0), own_claimed + own_buffered)
        head = doc.get("head_message_timestamp")
        oldest = max(0.0, time.time() - float(head)) if head and (free or unacked) else None
        free += own_buffered
        claimed = unacked - own_buffered
        return QueueStats(
            free=free, claimed=claimed, total=free + claimed, oldest_age=oldest if free + claimed else None
        )

    def _buffered(self) -> int:
        inbox = self._link._consumers.get(self.name)
        if inbox is None or inbox.generation != self._link.generation:
            return 0
        return inbox.ready.qsize()

    def purge(self) -> None:
        """Delete the ready messages (``queue.purge``) and those pushed to this client but not
        handed out. Messages claimed by consumers stay theirs (as on Zaqar)."""

        async def purge():
            inbox = self._link._consumers.get(self.name)
            if inbox is not None and inbox.generation == self._link.generation:
                while not inbox.ready.empty():
                    await inbox.ready.get_nowait().ack()
            ch = await self._link.control_channel()
            try:
                q = await ch.declare_queue(self.name, passive=True)
                await q.purge()
            finally:
                if not ch.is_closed:
                    await ch.close()

        self._do("purge", purge, safe=True)

    def drop(self) -> None:
        """Delete the queue, its dead-letter queue and exchange, and their policies."""

        async def delete():
            for q in (self.name, self.dead_letter_name):
                inbox = self._link._consumers.pop(q, None)
                if inbox is not None:
                    await inbox.cancel(self._link.generation)
            ch = await self._link.control_channel()
            try:
                for q in (self.name, self.dead_letter_name):
                    await ch.queue_delete(q)
                await ch.exchange_delete(self.name + "-dlx")
                await ch.exchange_delete(self.name + "-in")
                for q in (self.name, self.dead_letter_name):
                    self._link.exchanges.pop(q, None)
            finally:
                if not ch.is_closed:
                    await ch.close()

        self._do("drop", delete, safe=True)
        for q in (self.name, self.dead_letter_name):
            self._management("DELETE", self._vhost_path("policies", "qw." + q), missing_ok=True)

    def dead_letter_queue(self) -> AMQPQueue:
        dlq_policy = self.policy.for_dead_letters()
        dlq = AMQPQueue(
            self.dead_letter_name,
            policy=dlq_policy,
            prefetch=self.prefetch,
            wait_seconds=self.wait_seconds,
            retry_policy=self.retry_policy,
            timeout=self.timeout,
            _link=self._link,
        )
        dlq.post_exchange = self.name + "-dlx"  # bound to NAME-dlq with routing key NAME-dlq
        return dlq

    def close(self) -> None:
        """Close the connection; unacknowledged deliveries go back to the broker's queues."""
        self._link.close()


def _message(delivery, receipt: str, now: float) -> Message:
    headers = delivery.headers or {}
    try:
        body = json.loads(delivery.body)
    except ValueError:  # published by someone else as plain text
        body = delivery.body.decode(errors="replace")
    raw = headers.get(POSTED_AT)
    if isinstance(raw, bytes):
        raw = raw.decode()
    posted: float | None = None
    if isinstance(raw, str | SupportsFloat):  # anything else (absent, a table) is not a time
        try:
            posted = float(raw)
        except ValueError:
            pass
    if posted is None:
        posted = delivery.timestamp.timestamp() if delivery.timestamp else None
    returns = int(headers.get("x-delivery-count") or 0)  # quorum queues count returns
    return Message(
        id=delivery.message_id or receipt,
        body=body,
        age=max(0.0, now - posted) if posted else 0.0,
        claim_count=returns + 1,
        receipt=receipt,
    )

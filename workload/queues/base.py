"""The one queue interface every driver implements, and the values that cross it.

A driver is bound to one queue. Its dead-letter queue is another driver of the same backend,
reached through :meth:`QueueDriver.dead_letter_queue`. Zaqar's vocabulary is used throughout
(claim, grace, free/claimed); the SQS driver maps it: claim = receive with a visibility timeout,
renew = ChangeMessageVisibility, release = visibility 0, dead-lettering = a redrive policy.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from workload.error_text import not_allowed

# Zaqar's hard-coded limits (zaqar/transport/validation.py); the SQS driver checks its own.
CLAIM_TTL_RANGE = (60, 43200)
CLAIM_GRACE_RANGE = (60, 43200)
CLAIM_LIMIT_RANGE = (1, 20)
MESSAGE_TTL_RANGE = (60, 1209600)
DELAY_RANGE = (0, 900)
MAX_POST_BYTES = 262144
MAX_POST_MESSAGES = 20  # Zaqar's default max_messages_per_page / post batch
MAX_DELETE_IDS = 20


class QueueError(Exception):
    """An error from the queue service or from checking input before sending.

    ``title`` and ``description`` carry the service's own words when the service said no.
    """

    def __init__(self, title: str, description: str = "", status: int | None = None):
        self.title = title
        self.description = description
        self.status = status
        super().__init__(f"{title}: {description}" if description else title)


class InvalidInput(QueueError, ValueError):
    """Input refused before anything was sent: names the value and what is allowed."""

    def __init__(self, name: str, value: Any, allowed: str):
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__("Invalid input", not_allowed(name, value, allowed))


class QueueNotFound(QueueError):
    """The queue does not exist (SQS) or has never been created (Zaqar answers as if it had)."""


class ClaimLost(QueueError):
    """The claim expired or was released: its messages may already be with another consumer."""


class ServiceUnavailable(QueueError):
    """Connection failure or 5xx after the retries allowed for the operation ran out."""


def check_range(name: str, value: int | float, bounds: tuple[int, int]) -> None:
    """Raise :class:`InvalidInput` unless ``bounds[0] <= value <= bounds[1]``."""
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise InvalidInput(name, value, f"a number from {lo} to {hi}")


@dataclasses.dataclass(frozen=True)
class QueuePolicy:
    """What a queue is created with. Zaqar keeps it as queue metadata; SQS as attributes."""

    message_ttl: int = 3600  # seconds a message lives unclaimed-and-undeleted
    claim_ttl: int = 300  # default claim (visibility) time a consumer asks for
    claim_grace: int = 60  # Zaqar: extra life a claimed message gets past its claim
    delay: int = 0  # seconds before a posted message can be claimed
    max_claims: int = 5  # dead-letter after this many claims; 0 = never
    dead_letter_suffix: str = "-dlq"
    dead_letter_ttl: int = 1209600

    def for_dead_letters(self) -> QueuePolicy:
        """The policy of this queue's dead-letter queue: its own TTL, never dead-lettering."""
        return QueuePolicy(
            message_ttl=self.dead_letter_ttl,
            claim_ttl=self.claim_ttl,
            claim_grace=self.claim_grace,
            max_claims=0,
            dead_letter_ttl=self.dead_letter_ttl,
        )

    def validate(self) -> None:
        check_range("message_ttl", self.message_ttl, MESSAGE_TTL_RANGE)
        check_range("claim_ttl", self.claim_ttl, CLAIM_TTL_RANGE)
        check_range("claim_grace", self.claim_grace, CLAIM_GRACE_RANGE)
        check_range("delay", self.delay, DELAY_RANGE)
        check_range("max_claims", self.max_claims, (0, 1000))
        check_range("dead_letter_ttl", self.dead_letter_ttl, MESSAGE_TTL_RANGE)


@dataclasses.dataclass(frozen=True)
class Message:
    """A message as a consumer sees it. ``body`` is the decoded JSON value that was posted."""

    id: str
    body: Any
    age: float = 0.0  # seconds since it was posted
    claim_count: int | None = None  # times claimed so far, where the service tells it
    receipt: str | None = None  # SQS receipt handle; None for Zaqar


@dataclasses.dataclass
class Claim:
    """Messages held by one consumer until deleted, released or the claim expires."""

    id: str
    messages: list[Message]
    ttl: int
    grace: int = 0
    # Bookkeeping a driver keeps on the claims it made: not part of a claim's value (no init, repr
    # or comparison) and absent until that driver sets it (drivers test hasattr). Zaqar and SQS:
    # ids of the messages neither deleted nor released yet; Zaqar: those to give back once the
    # others are settled; AMQP: the connection generation the deliveries came on.
    _held: set[str] = dataclasses.field(init=False, repr=False, compare=False)
    _to_release: set[str] = dataclasses.field(init=False, repr=False, compare=False)
    _generation: int = dataclasses.field(init=False, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """Depth of one queue. ``oldest_age`` is None when the queue is empty."""

    free: int
    claimed: int
    total: int
    oldest_age: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class QueueDriver(abc.ABC):
    """One queue on one backend. Every method may raise :class:`QueueError`."""

    name: str
    policy: QueuePolicy

    if TYPE_CHECKING:
        # Every driver is built as Driver(name, **options) (open_queue); each declares its own
        # keyword-only options, so the base has no constructor of its own at run time.
        def __init__(self, name: str, **options: Any) -> None: ...

    @abc.abstractmethod
    def ensure(self, policy: QueuePolicy | None = None) -> None:
        """Create the queue and its dead-letter queue if missing and set their policy."""

    @abc.abstractmethod
    def post(self, bodies: Sequence[Any], ttl: int | None = None, delay: int | None = None) -> list[str]:
        """Post JSON-able bodies, split into batches the service accepts; return their ids in order."""

    @abc.abstractmethod
    def claim(self, limit: int = 10, ttl: int | None = None, grace: int | None = None) -> Claim | None:
        """Claim up to ``limit`` free messages; None when there are none."""

    @abc.abstractmethod
    def renew(self, claim: Claim, ttl: int | None = None) -> None:
        """Extend a claim (raises :class:`ClaimLost` if it is gone)."""

    @abc.abstractmethod
    def release(self, claim: Claim, messages: Iterable[Message] | None = None) -> None:
        """Give back the claim's messages (or only ``messages``) for another consumer now."""

    @abc.abstractmethod
    def delete(self, message: Message, claim: Claim | None = None) -> None:
        """Delete a handled message. Deleting one that is already gone is not an error."""

    def delete_many(self, messages: Sequence[Message], claim: Claim | None = None) -> None:
        """Delete several handled messages of one claim (at most ``MAX_DELETE_IDS``).

        The consumer deletes its done messages through this. Drivers override it with the
        service's bulk call where there is one (Zaqar ``DELETE .../messages?ids=a,b`` with literal
        commas, SQS DeleteMessageBatch); this default deletes them one by one.
        """
        for message in messages:
            self.delete(message, claim)

    @abc.abstractmethod
    def stats(self) -> QueueStats:
        """Free, claimed, total and oldest age of this queue."""

    @abc.abstractmethod
    def purge(self) -> None:
        """Delete every message in this queue (not its dead-letter queue)."""

    @abc.abstractmethod
    def drop(self) -> None:
        """Delete this queue and its dead-letter queue. Missing queues are not an error."""

    @abc.abstractmethod
    def dead_letter_queue(self) -> QueueDriver:
        """The driver of this queue's dead-letter queue (same backend, ``name + suffix``)."""

    def dead_letter(self, message: Message, claim: Claim | None, reason: str) -> None:
        """Move a message the consumer gave up on to the dead-letter queue, then delete it here.

        Used where the service does not dead-letter by itself; the moved body records the
        original id and the reason. Posted before it is deleted: a crash in between duplicates it.
        """
        from workload.queues import deadletter

        body = deadletter.wrap(
            message.body,
            queue=self.name,
            message_id=message.id,
            reason=reason,
            claim_count=message.claim_count,
        )
        self.dead_letter_queue().post([body])
        self.delete(message, claim)

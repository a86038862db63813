"""Amazon SQS (or any SQS-compatible endpoint, e.g. moto's server) through boto3.

Zaqar's vocabulary maps onto SQS like this: a claim is one ``ReceiveMessage`` with a visibility
timeout (the claim id is made here, one per receive; the receipt handles ride in each
:class:`Message`), renew is ``ChangeMessageVisibility``, release is visibility 0, dead-lettering
after N claims is a ``RedrivePolicy`` pointing at the dead-letter queue's ARN with
``maxReceiveCount``. SQS has no claim grace and no per-message TTL (retention is per queue).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from workload.queues import batching, retry
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
from workload.queues.limits import SQS, encode_json

_MISSING_QUEUE_CODES = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
_LOST_RECEIPT_CODES = {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"}


class SQSQueue(QueueDriver):
    """One SQS queue.

    :param name: queue name (SQS allows letters, digits, ``-`` and ``_``, up to 80).
    :param endpoint_url: SQS endpoint (e.g. a local moto server); default AWS's own for the region.
    :param region: AWS region (default: boto3's, from ``AWS_DEFAULT_REGION`` or its config).
    :param aws_access_key_id, aws_secret_access_key, aws_session_token: credentials; default
        boto3's own chain (environment, shared files, instance role).
    :param policy: the queue's policy (defaults of :class:`QueuePolicy`).
    :param wait_seconds: long-poll time of a claim (0..20); small, so a consumer stays responsive.
    :param retry_policy: backoff for safe operations (botocore's own retries are turned off so
        that a message send is never repeated).
    """

    limits = SQS

    def __init__(
        self,
        name: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        policy: QueuePolicy | None = None,
        wait_seconds: int = 1,
        retry_policy: retry.RetryPolicy | None = None,
        _client=None,
    ):
        if not isinstance(name, str) or not name:
            raise InvalidInput("name", name, "a non-empty queue name")
        if isinstance(wait_seconds, bool) or not isinstance(wait_seconds, int) or not 0 <= wait_seconds <= 20:
            raise InvalidInput("wait_seconds", wait_seconds, "a whole number from 0 to 20")
        self.name = name
        self.policy = policy or QueuePolicy()
        self.policy.validate()
        self.wait_seconds = wait_seconds
        self.retry_policy = retry_policy or retry.RetryPolicy()
        if _client is None:
            import boto3
            from botocore.config import Config

            _client = boto3.client(
                "sqs",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                aws_session_token=aws_session_token,
                config=Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=30),
            )
        self._client = _client
        self._url: str | None = None

    def __repr__(self) -> str:
        return f"SQSQueue({self.name!r} at {self._client.meta.endpoint_url})"

    # -- calls ----------------------------------------------------------------------------------
    def _call(self, op: str, *, safe: bool, **kwargs) -> dict[str, Any]:
        """One SQS API call with our retries when ``safe``; errors carry AWS's code and message."""
        from botocore import exceptions as bce

        def attempt():
            try:
                return getattr(self._client, op)(**kwargs)
            except bce.ClientError as exc:
                err = _client_error(exc)
                if err.status is not None and err.status >= 500:
                    raise retry.Retryable(ServiceUnavailable(err.title, err.description, err.status)) from exc
                raise err from None
            except bce.NoCredentialsError:
                # botocore found none before sending anything: the service would refuse (401)
                raise QueueError(
                    "No credentials",
                    f"{op}: no AWS credentials found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                    "AWS_PROFILE, ~/.aws/credentials or an instance role)",
                    401,
                ) from None
            except (bce.ConnectionError, bce.HTTPClientError) as exc:
                raise retry.Retryable(
                    ServiceUnavailable(
                        "Connection failed", f"{op} to {self._client.meta.endpoint_url}: {exc}"
                    )
                ) from None

        return retry.call(attempt, self.retry_policy, safe=safe, what=op)

    @property
    def url(self) -> str:
        """The queue's URL (looked up once)."""
        if self._url is None:
            self._url = self._call("get_queue_url", safe=True, QueueName=self.name)["QueueUrl"]
        return self._url

    # -- the interface ----------------------------------------------------------------------------
    def ensure(self, policy: QueuePolicy | None = None) -> None:
        if policy is not None:
            policy.validate()
            self.policy = policy
        p = self.policy
        dlq = self.dead_letter_queue()
        dlq._create({"MessageRetentionPeriod": p.dead_letter_ttl, "VisibilityTimeout": p.claim_ttl})
        attrs: dict[str, Any] = {
            "MessageRetentionPeriod": p.message_ttl,
            "VisibilityTimeout": p.claim_ttl,
            "DelaySeconds": p.delay,
            "RedrivePolicy": "",
        }
        if p.max_claims:
            arn = dlq._call("get_queue_attributes", safe=True, QueueUrl=dlq.url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            attrs["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arn, "maxReceiveCount": str(p.max_claims)}
            )
        self._create(attrs)

    def _create(self, attrs: dict[str, Any]) -> None:
        # CreateQueue with attributes that differ from an existing queue's fails, so create bare
        # (idempotent) and then set the attributes (idempotent too).
        self._url = self._call("create_queue", safe=True, QueueName=self.name)["QueueUrl"]
        self._call(
            "set_queue_attributes",
            safe=True,
            QueueUrl=self._url,
            Attributes={k: str(v) for k, v in attrs.items()},
        )

    def post(self, bodies: Sequence[Any], ttl: int | None = None, delay: int | None = None) -> list[str]:
        """Post bodies (JSON text each). ``ttl`` is checked but SQS keeps every message for the
        queue's retention period (``policy.message_ttl``)."""
        self.limits.check_post(ttl, delay)
        texts = [encode_json(b, i) for i, b in enumerate(bodies)]
        sizes = [len(t.encode()) for t in texts]
        ids: list[str] = []
        for rng in batching.split_batches(sizes, self.limits.batch_messages, self.limits.batch_bytes):
            entries: list[dict[str, Any]] = [{"Id": str(i), "MessageBody": texts[i]} for i in rng]
            if delay is not None:
                for e in entries:
                    e["DelaySeconds"] = delay
            # Never retried: a send whose answer was lost may have stored the messages.
            resp = self._call("send_message_batch", safe=False, QueueUrl=self.url, Entries=entries)
            if resp.get("Failed"):
                f = resp["Failed"][0]
                raise QueueError(
                    f.get("Code", "SendMessageBatch failed"),
                    f"{len(resp['Failed'])} of {len(entries)} messages refused "
                    f"(bodies[{f.get('Id')}] first): {f.get('Message', '')}; "
                    f"{len(ids) + len(resp.get('Successful', []))} were posted",
                )
            by_index = {int(s["Id"]): s["MessageId"] for s in resp.get("Successful", [])}
            ids += [by_index[i] for i in rng]
        return ids

    def claim(self, limit: int = 10, ttl: int | None = None, grace: int | None = None) -> Claim | None:
        ttl = self.policy.claim_ttl if ttl is None else ttl
        grace = 0 if grace is None else grace  # SQS has no grace; checked for the same contract
        self.limits.check_claim(limit, ttl, grace)
        # ReceiveMessage is retried: a repeat after a lost answer leaves the first receive's
        # messages invisible until their visibility timeout ends, then they are delivered again
        # (a delay, not a loss).
        resp = self._call(
            "receive_message",
            safe=True,
            QueueUrl=self.url,
            MaxNumberOfMessages=limit,
            VisibilityTimeout=ttl,
            WaitTimeSeconds=self.wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        raw = resp.get("Messages") or []
        if not raw:
            return None
        now = time.time()
        messages = []
        for m in raw:
            a = m.get("Attributes", {})
            try:
                body = json.loads(m["Body"])
            except ValueError:  # posted by someone else as plain text: hand it over as is
                body = m["Body"]
            sent = a.get("SentTimestamp")
            messages.append(
                Message(
                    id=m["MessageId"],
                    body=body,
                    age=max(0.0, now - int(sent) / 1000) if sent else 0.0,
                    claim_count=int(a["ApproximateReceiveCount"]) if "ApproximateReceiveCount" in a else None,
                    receipt=m["ReceiptHandle"],
                )
            )
        claim = Claim(id=str(uuid.uuid4()), messages=messages, ttl=ttl, grace=0)
        claim._held = {m.id for m in messages}
        return claim

    def _set_visibility(self, claim: Claim, messages: list[Message], seconds: int) -> None:
        for start in range(0, len(messages), self.limits.batch_messages):
            chunk = messages[start : start + self.limits.batch_messages]
            resp = self._call(
                "change_message_visibility_batch",
                safe=True,
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": seconds}
                    for i, m in enumerate(chunk)
                ],
            )
            if resp.get("Failed"):
                f = resp["Failed"][0]
                cls = ClaimLost if f.get("Code") in _LOST_RECEIPT_CODES else QueueError
                raise cls(
                    f.get("Code", "ChangeMessageVisibility failed"),
                    f"message {chunk[int(f['Id'])].id} of claim {claim.id}: {f.get('Message', '')}",
                )

    def _held(self, claim: Claim) -> list[Message]:
        held = getattr(claim, "_held", {m.id for m in claim.messages})
        return [m for m in claim.messages if m.id in held]

    def renew(self, claim: Claim, ttl: int | None = None) -> None:
        ttl = claim.ttl if ttl is None else ttl
        self.limits.check_claim(1, ttl, 0)
        self._set_visibility(claim, self._held(claim), ttl)
        claim.ttl = ttl

    def release(self, claim: Claim, messages: Iterable[Message] | None = None) -> None:
        held = self._held(claim)
        if messages is not None:
            wanted = {m.id for m in messages}
            held = [m for m in held if m.id in wanted]
        if held:
            self._set_visibility(claim, held, 0)
        claim._held = getattr(claim, "_held", {m.id for m in claim.messages}) - {m.id for m in held}

    def delete(self, message: Message, claim: Claim | None = None) -> None:
        if not message.receipt:
            raise InvalidInput(
                "message.receipt",
                message.receipt,
                "the receipt handle of a received SQS message (delete what you claimed)",
            )
        try:
            self._call("delete_message", safe=True, QueueUrl=self.url, ReceiptHandle=message.receipt)
        except QueueError as exc:
            if exc.title in _LOST_RECEIPT_CODES:
                raise ClaimLost(exc.title, exc.description, exc.status) from None
            raise
        if claim is not None and hasattr(claim, "_held"):
            claim._held.discard(message.id)

    def delete_many(self, messages: Sequence[Message], claim: Claim | None = None) -> None:
        """DeleteMessageBatch, 10 receipts a request; a receipt SQS no longer honours raises
        :class:`ClaimLost` (after the others of its batch are deleted)."""
        failed = []
        for start in range(0, len(messages), self.limits.batch_messages):
            chunk = list(messages[start : start + self.limits.batch_messages])
            resp = self._call(
                "delete_message_batch",
                safe=True,
                QueueUrl=self.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)],
            )
            failed += [(chunk[int(f["Id"])], f) for f in resp.get("Failed", [])]
            if claim is not None and hasattr(claim, "_held"):
                claim._held.difference_update(m.id for m in chunk)
        if failed:
            message, f = failed[0]
            cls = ClaimLost if f.get("Code") in _LOST_RECEIPT_CODES else QueueError
            raise cls(
                f.get("Code", "DeleteMessageBatch failed"),
                f"{len(failed)} of {len(messages)} not deleted, first {message.id}: {f.get('Message', '')}",
            )

    def stats(self) -> QueueStats:
        """Approximate counts, as SQS reports them (``ApproximateNumberOfMessages`` = free,
        ``...NotVisible`` = claimed, ``...Delayed`` counted in total). SQS's API has no oldest age
        (only CloudWatch's ApproximateAgeOfOldestMessage): ``oldest_age`` is None."""
        try:
            a = self._call(
                "get_queue_attributes",
                safe=True,
                QueueUrl=self.url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
        except QueueNotFound:
            return QueueStats(0, 0, 0, None)
        free = int(a.get("ApproximateNumberOfMessages", 0))
        claimed = int(a.get("ApproximateNumberOfMessagesNotVisible", 0))
        delayed = int(a.get("ApproximateNumberOfMessagesDelayed", 0))
        return QueueStats(free=free, claimed=claimed, total=free + claimed + delayed, oldest_age=None)

    def purge(self) -> None:
        """Delete every message, in flight or not. AWS allows one purge per queue per 60 s."""
        self._call("purge_queue", safe=True, QueueUrl=self.url)

    def drop(self) -> None:
        for q in (self, self.dead_letter_queue()):
            try:
                q._call("delete_queue", safe=True, QueueUrl=q.url)
            except QueueNotFound:
                pass
            q._url = None

    def dead_letter_queue(self) -> SQSQueue:
        dlq_policy = self.policy.for_dead_letters()
        return SQSQueue(
            self.name + self.policy.dead_letter_suffix,
            policy=dlq_policy,
            wait_seconds=self.wait_seconds,
            retry_policy=self.retry_policy,
            _client=self._client,
        )


def _client_error(exc) -> QueueError:
    """AWS's own code and message; a missing queue as :class:`QueueNotFound`."""
    err = exc.response.get("Error", {})
    code = err.get("Code") or "ClientError"
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    cls = QueueNotFound if code in _MISSING_QUEUE_CODES else QueueError
    return cls(code, err.get("Message", str(exc)), status)

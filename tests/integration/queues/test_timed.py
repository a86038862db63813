"""Claim expiry, renewal and service-side dead-lettering: they wait on real claim times.

Zaqar's shortest claim is 60 s, so these are ``slow`` there. One module-scoped setup per backend
starts all three scenarios at once and each test then waits for its own moment, so on Zaqar the
three 60 s waits overlap into about one.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from conftest import SHORT_TTL

from workload.queues import ClaimLost, QueuePolicy, open_queue, redrive


class Scenarios:
    def __init__(self, backend, service):
        self.backend, self.ttl = backend, SHORT_TTL[backend]
        self.queues = []
        self.started = time.monotonic()

        self.expiring = self._queue(QueuePolicy(max_claims=0))
        self.expiring.post(["expire-me"])
        self.expired_claim = self.expiring.claim(limit=1, ttl=self.ttl, grace=60)

        self.long_job = self._queue(QueuePolicy(max_claims=0))
        self.long_job.post(["long-job"])
        self.long_claim = self.long_job.claim(limit=1, ttl=self.ttl, grace=60)
        self.renew_errors: list[Exception] = []
        self.renewals = 0
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True)
        self._renewer.start()

        self.poisoned = self._queue(QueuePolicy(max_claims=2))
        self.poisoned.post(["poison"])
        self.poison_claims = []
        for _ in range(2):  # two handlers fail and give it back
            c = self.poisoned.claim(limit=1, ttl=self.ttl, grace=60)
            self.poison_claims.append(c)
            self.poisoned.release(c)
        self.third_claim = self.poisoned.claim(limit=1, ttl=self.ttl, grace=60)

        self.bare = None
        if backend == "zaqar":  # the same expiry on a Zaqar that runs no garbage collector
            from devenv.zaqar import LocalZaqar

            self.bare = LocalZaqar(gc_interval=0).start()
            self.bare_queue = open_queue("zaqar", f"tm-{uuid.uuid4().hex[:10]}", **self.bare.queue_options)
            self.bare_queue.ensure(QueuePolicy(max_claims=0))
            self.bare_queue.post(["expire-me-too"])
            self.bare_queue.claim(limit=1, ttl=self.ttl, grace=60)

    def _queue(self, policy):
        q = open_queue(self.backend, f"tm-{uuid.uuid4().hex[:10]}", **self.service_options)
        q.ensure(policy)
        self.queues.append(q)
        return q

    def _renew_loop(self):
        """What a consumer does while a handler outlives its claim: renew well before expiry."""
        while not self._stop.wait(self.ttl / 3):
            try:
                self.long_job.renew(self.long_claim, ttl=self.ttl)
                self.renewals += 1
            except Exception as exc:  # recorded; the test asserts there were none
                self.renew_errors.append(exc)

    def wait_past_expiry(self, extra: float = 1.0):
        remaining = self.started + self.ttl + extra - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def poll_claim(self, q, timeout: float):
        """Claim until something comes (the service frees expired claims lazily)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = q.claim(limit=10, ttl=60, grace=60)
            if c is not None:
                return c
            time.sleep(0.5)
        return None

    def close(self):
        if self.bare:
            self.bare.stop()
        self._stop.set()
        self._renewer.join(timeout=120)
        for q in self.queues:
            try:
                q.drop()
            except Exception:
                pass


@pytest.fixture(scope="module", params=[pytest.param("zaqar", marks=pytest.mark.slow), "sqs"])
def scenarios(request):
    """All timed scenarios of one backend, started together."""
    backend = request.param
    service = request.getfixturevalue(backend)
    Scenarios.service_options = service.queue_options
    s = Scenarios(backend, service)
    yield s
    s.close()


def test_an_expired_claim_gives_the_message_to_the_next_claim(scenarios):
    s = scenarios
    assert s.expiring.claim(limit=1, ttl=60, grace=60) is None  # still held
    s.wait_past_expiry()
    again = s.poll_claim(s.expiring, timeout=30)
    assert again is not None and [m.body for m in again.messages] == ["expire-me"]
    assert again.id != s.expired_claim.id
    if s.backend == "zaqar":
        with pytest.raises(ClaimLost):
            s.expiring.renew(s.expired_claim)
    stats = s.expiring.stats()  # after an expiry Zaqar needs its gc to answer; it runs locally
    assert (stats.claimed, stats.total) == (1, 1)


def test_renewal_keeps_a_long_job_from_redelivery(scenarios):
    s = scenarios
    s.wait_past_expiry(extra=min(s.ttl / 2, 5))  # the first claim would have expired by now
    assert s.long_job.claim(limit=1, ttl=60, grace=60) is None
    assert s.renew_errors == [] and s.renewals >= 2
    s._stop.set()
    s._renewer.join(timeout=120)
    s.long_job.delete(s.long_claim.messages[0], s.long_claim)
    assert s.long_job.stats().total == 0


def test_a_poison_message_goes_to_the_dead_letter_queue_after_n_claims_and_redrives_back(scenarios):
    s = scenarios
    assert s.third_claim is None  # the claim after max_claims moved it instead of handing it out
    dlq = s.poisoned.dead_letter_queue()
    # On Zaqar's redis driver the moved message stays tied to that (unreturned) claim until it
    # expires, so it becomes claimable in the dead-letter queue after about one claim ttl.
    dead = s.poll_claim(dlq, timeout=s.ttl + 30)
    assert dead is not None and [m.body for m in dead.messages] == ["poison"]
    assert s.poisoned.claim(limit=1, ttl=60, grace=60) is None
    dlq.release(dead)
    assert redrive(dlq, s.poisoned) == 1
    back = s.poisoned.claim(limit=1, ttl=60, grace=60)
    assert back is not None and [m.body for m in back.messages] == ["poison"]
    assert dlq.stats().total == 0


@pytest.mark.parametrize("scenarios", [pytest.param("zaqar", marks=pytest.mark.slow)], indirect=True)
def test_zaqar_stats_answer_503_after_an_expiry_until_the_gc_runs(scenarios):
    """Zaqar 23's redis driver, as it is: the driver does not hide the 503, and the garbage
    collection the local server runs (here once, by hand) is what makes stats answer again."""
    from workload.queues import ServiceUnavailable, retry

    s = scenarios
    s.wait_past_expiry(extra=2)
    q = open_queue("zaqar", s.bare_queue.name, retry_policy=retry.NO_RETRY, **s.bare.queue_options)
    with pytest.raises(ServiceUnavailable) as err:
        q.stats()
    assert err.value.status == 503 and err.value.description  # the service's own words
    s.bare.collect_garbage()
    assert q.stats().total == 1

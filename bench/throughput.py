"""Messages/s through the consumer against the best raw client we can write, per backend, in one run.

    python -m bench.throughput [--json] [--messages N] [--rounds R] [--backends zaqar,amqp]

For each round, each backend and each contender (in an order that rotates every round, so no
contender always runs first or last on the shared machine), a fresh queue is filled with N
messages and the contender drains it; the figure is N divided by the drain time:

- ``raw``: the best client we can write, as many connections as the consumer uses:
  Zaqar: two threads (the consumer's claim loop and its settler), each on its own HTTP
  connection, claiming 20 and bulk-deleting their ids in turn; AMQP: one connection with the
  consumer's prefetch, deliveries acked in one ``multiple`` ack per 20 (aio-pika directly);
- ``consumer_1`` / ``consumer_4``: :class:`workload.consumer.Consumer` with the no-op python
  handler, batch 20, 1 and 4 workers, JSON logs written (to the null device), through the driver.

The best round of each is kept (the machine is shared; the best is the least disturbed). The last
line of output is one JSON object: per backend the three rates, ``ratio`` = consumer_4 / raw and
``ratio_1_worker`` = consumer_1 / raw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests

from workload.error_text import not_allowed
from workload.settings import SettingError, option

CONTENDERS = ("raw", "consumer_1", "consumer_4")
BATCH = 20
BACKENDS = ("zaqar", "amqp")


def consumer_drain(queue, n: int, workers: int) -> tuple[float, dict[str, Any]]:
    """Drain ``n`` messages with the consumer (no-op handler); return seconds and its summary."""
    from workload.consumer import Consumer, ConsumerConfig, JsonLog
    from workload.handlers import make_handler

    with open(os.devnull, "w") as null:
        c = Consumer(
            queue,
            make_handler("python", "workload.handlers.builtin:noop"),
            ConsumerConfig(
                batch=BATCH,
                concurrency=workers,
                max_messages=n,
                claim_ttl=60,
                claim_grace=60,
                poll_min=0.01,
                poll_max=0.05,
            ),
            log=JsonLog(null),
        )
        start = time.perf_counter()
        summary = c.run()
        return time.perf_counter() - start, summary


def _bodies(n: int) -> list[dict[str, Any]]:
    return [{"seq": i, "produced_at": time.time()} for i in range(n)]


class ZaqarRig:
    """A local Zaqar, its queues, and the raw HTTP client."""

    name = "zaqar"

    def __init__(self):
        from devenv.zaqar import LocalZaqar

        self.service = LocalZaqar()

    def open(self, workers: int):
        from workload.queues import open_queue

        return open_queue("zaqar", self.queue_name, **self.service.queue_options)

    def fill(self, n: int) -> None:
        self.queue_name = "bench-" + uuid.uuid4().hex[:10]
        q = self.open(1)
        bodies = _bodies(n)
        for i in range(0, n, 500):
            q.post(bodies[i : i + 500])

    def raw_drain(self, n: int, streams: int = 2) -> float:
        """``streams`` threads, each its own connection: claim 20, bulk delete, repeat."""
        base = f"{self.service.url}/v2/queues/{self.queue_name}"
        left = [n]
        lock = threading.Lock()
        errors: list[Exception] = []

        def stream():
            s = requests.Session()
            s.headers.update(
                {
                    "Client-ID": str(uuid.uuid4()),
                    "X-Project-ID": self.service.project,
                    "Content-Type": "application/json",
                }
            )
            try:
                while True:
                    with lock:
                        if left[0] <= 0:
                            return
                    r = s.post(f"{base}/claims?limit={BATCH}", json={"ttl": 60, "grace": 60})
                    if r.status_code == 204:
                        continue  # the other stream holds the rest
                    r.raise_for_status()
                    ids = [m["href"].split("/messages/")[1].split("?")[0] for m in r.json()["messages"]]
                    # Literal commas: Zaqar 23 reads a percent-encoded comma as part of one id.
                    d = s.delete(f"{base}/messages?ids=" + ",".join(ids))
                    if d.status_code not in (200, 204):
                        raise RuntimeError(f"bulk delete answered {d.status_code}: {d.text}")
                    with lock:
                        left[0] -= len(ids)
            except Exception as exc:  # noqa: BLE001 - reported by the caller
                errors.append(exc)

        threads = [threading.Thread(target=stream) for _ in range(streams)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return time.perf_counter() - start


class AMQPRig:
    """A local RabbitMQ, its quorum queues (through the driver's ensure), and the raw aio-pika client."""

    name = "amqp"

    def __init__(self):
        from devenv.rabbitmq import LocalRabbitMQ

        self.service = LocalRabbitMQ()

    def open(self, workers: int):
        from workload.queues import open_queue

        # what the consumer CLI asks for: the broker pushes what a consumer keeps in hand
        return open_queue("amqp", self.queue_name, prefetch=workers + BATCH, **self.service.queue_options)

    def fill(self, n: int) -> None:
        from workload.queues import QueuePolicy

        self.queue_name = "bench-" + uuid.uuid4().hex[:10]
        q = self.open(1)
        q.ensure(QueuePolicy(max_claims=5))
        q.close()
        asyncio.run(self._publish(n))

    async def _publish(self, n: int, window: int = 1000) -> None:
        import aio_pika

        conn = await aio_pika.connect(self.service.amqp_url)
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            bodies = [json.dumps(b).encode() for b in _bodies(n)]
            for i in range(0, n, window):
                await asyncio.gather(
                    *(
                        ch.default_exchange.publish(
                            aio_pika.Message(
                                b, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=uuid.uuid4().hex
                            ),
                            routing_key=self.queue_name,
                        )
                        for b in bodies[i : i + window]
                    )
                )

    def raw_drain(self, n: int) -> float:
        return asyncio.run(self._drain(n))

    async def _drain(self, n: int) -> float:
        import aio_pika

        conn = await aio_pika.connect(self.service.amqp_url)
        async with conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=4 + BATCH)  # consumer_4's prefetch
            queue = await ch.get_queue(self.queue_name, ensure=False)
            done = asyncio.Event()
            seen = [0]

            async def on_message(message):
                seen[0] += 1
                if seen[0] % BATCH == 0 or seen[0] >= n:
                    await message.ack(multiple=True)
                if seen[0] >= n:
                    done.set()

            start = time.perf_counter()
            tag = await queue.consume(on_message)
            await done.wait()
            secs = time.perf_counter() - start
            await queue.cancel(tag)
            return secs


def _drop(queue) -> None:
    queue.drop()
    if hasattr(queue, "close"):
        queue.close()


def measure(
    messages: int, rounds: int, backends: list[str], progress: Callable[[str], None]
) -> dict[str, Any]:
    rig_types: dict[str, type[ZaqarRig] | type[AMQPRig]] = {"zaqar": ZaqarRig, "amqp": AMQPRig}
    rigs = [rig_types[b]() for b in backends]
    best: dict[str, dict[str, float]] = {r.name: {} for r in rigs}
    started = []
    try:
        for rig in rigs:
            rig.service.start()
            started.append(rig)
            progress(f"local {rig.name} at {rig.service.url}")
        for r in range(rounds):
            order = CONTENDERS[r % 3 :] + CONTENDERS[: r % 3]  # interleaved, rotating
            for name in order:
                for rig in rigs:
                    rig.fill(messages)
                    workers = 0 if name == "raw" else int(name.split("_")[1])
                    queue = rig.open(max(1, workers))
                    if name == "raw":
                        secs = rig.raw_drain(messages)
                    else:
                        secs, summary = consumer_drain(queue, messages, workers)
                        if summary["done"] != messages:
                            raise RuntimeError(
                                f"{rig.name} {name} handled {summary['done']} of {messages}: {summary}"
                            )
                    rate = messages / secs
                    best[rig.name][name] = max(best[rig.name].get(name, 0.0), rate)
                    progress(f"round {r + 1}/{rounds} {rig.name:5} {name:11} {rate:8.0f} messages/s")
                    _drop(queue)
    finally:
        for rig in started:
            rig.service.stop()
    result: dict[str, Any] = {
        "benchmark": "throughput",
        "messages": messages,
        "rounds": rounds,
        "batch": BATCH,
        "target_ratio": 0.8,
        "backends": {},
    }
    for name, b in best.items():
        result["backends"][name] = {
            "raw_per_s": round(b["raw"], 1),
            "consumer_1_per_s": round(b["consumer_1"], 1),
            "consumer_4_per_s": round(b["consumer_4"], 1),
            "ratio": round(b["consumer_4"] / b["raw"], 3),
            "ratio_1_worker": round(b["consumer_1"] / b["raw"], 3),
        }
    return result


def parser() -> argparse.ArgumentParser:
    """The options, each through the workload's settings (range, default and variable in the help;
    a bad value on the command line or in the environment refused naming it)."""
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print only the JSON result (progress on stderr)")
    try:
        option(
            p,
            "--messages",
            env="QW_BENCH_MESSAGES",
            type=int,
            lo=100,
            default=10000,
            help="messages per drain",
        )
        option(
            p,
            "--rounds",
            env="QW_BENCH_ROUNDS",
            type=int,
            lo=1,
            default=3,
            help="rounds; the best of each contender is kept",
        )
        option(
            p,
            "--backends",
            env="QW_BENCH_BACKENDS",
            default=",".join(BACKENDS),
            help="comma-separated backends to measure side by side",
        )
    except SettingError as exc:  # a bad $QW_BENCH_* (read while the options are added)
        p.error(str(exc))
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or set(backends) - set(BACKENDS):
        p.error(not_allowed("--backends", args.backends, f"a comma-separated list of {', '.join(BACKENDS)}"))
    out = sys.stderr if args.json else sys.stdout
    result = measure(args.messages, args.rounds, backends, lambda line: print(line, file=out, flush=True))
    if not args.json:
        for name, b in result["backends"].items():
            print(
                f"{name}: consumer / raw = {b['ratio']:.2f} with 4 workers, {b['ratio_1_worker']:.2f} "
                f"with 1 (target {result['target_ratio']})"
            )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

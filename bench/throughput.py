"""Messages/s through the consumer against a raw client loop, on one local Zaqar, in one run.

    python -m bench.throughput [--json] [--messages N] [--rounds R]

For each round and each contender, a fresh queue is filled with N messages and the contender
drains it; the figure is N divided by the drain time:

- ``raw``: the least a client can do, straight HTTP: claim 20, bulk delete their ids, repeat;
- ``consumer_1`` / ``consumer_4``: :class:`workload.consumer.Consumer` with the no-op python
  handler, batch 20, 1 and 4 workers, JSON logs written (to the null device).

The best round of each is kept (the machine is shared; the best is the least disturbed). The last
line of output is one JSON object with the figures and ``ratio`` = consumer_4 / raw.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any, Callable

import requests


def _fill(queue, n: int) -> None:
    bodies = [{"seq": i, "produced_at": time.time()} for i in range(n)]
    for i in range(0, n, 500):
        queue.post(bodies[i:i + 500])


def raw_drain(url: str, project: str, name: str, n: int) -> float:
    """Drain ``n`` messages with plain HTTP (claim 20 + bulk delete); return the seconds taken."""
    s = requests.Session()
    s.headers.update({"Client-ID": str(uuid.uuid4()), "X-Project-ID": project,
                      "Content-Type": "application/json"})
    base = f"{url}/v2/queues/{name}"
    done = 0
    start = time.perf_counter()
    while done < n:
        r = s.post(f"{base}/claims?limit=20", json={"ttl": 60, "grace": 60})
        if r.status_code == 204:
            continue  # nothing free right now (should not happen: the queue was filled first)
        r.raise_for_status()
        ids = [m["href"].split("/messages/")[1].split("?")[0] for m in r.json()["messages"]]
        # Literal commas: Zaqar 23 reads a percent-encoded comma as part of one id and deletes nothing.
        d = s.delete(f"{base}/messages?ids=" + ",".join(ids))
        if d.status_code not in (200, 204):
            raise RuntimeError(f"bulk delete answered {d.status_code}: {d.text}")
        done += len(ids)
    return time.perf_counter() - start


def consumer_drain(queue, n: int, workers: int) -> tuple[float, dict[str, Any]]:
    """Drain ``n`` messages with the consumer (no-op handler); return seconds and its summary."""
    from workload.consumer import Consumer, ConsumerConfig, JsonLog
    from workload.handlers import make_handler

    with open(os.devnull, "w") as null:
        c = Consumer(queue, make_handler("python", "workload.handlers.builtin:noop"),
                     ConsumerConfig(batch=20, concurrency=workers, max_messages=n, claim_ttl=60,
                                    claim_grace=60, poll_min=0.01, poll_max=0.05),
                     log=JsonLog(null))
        start = time.perf_counter()
        summary = c.run()
        return time.perf_counter() - start, summary


def measure(messages: int, rounds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    from devenv.zaqar import LocalZaqar
    from workload.queues import open_queue

    from workload.queues.base import QueueDriver

    best: dict[str, float] = {}
    delete_mode = "?"
    with LocalZaqar() as zaqar:
        progress(f"local Zaqar at {zaqar.url}")

        def fresh():
            nonlocal delete_mode
            q = open_queue("zaqar", "bench-" + uuid.uuid4().hex[:10], **zaqar.queue_options)
            delete_mode = ("parallel-single" if type(q).delete_many is QueueDriver.delete_many
                           else "bulk")
            _fill(q, messages)
            return q

        for r in range(rounds):
            for name in ("raw", "consumer_1", "consumer_4"):
                q = fresh()
                if name == "raw":
                    secs = raw_drain(zaqar.url, zaqar.project, q.name, messages)
                else:
                    secs, summary = consumer_drain(q, messages, int(name.split("_")[1]))
                    if summary["done"] != messages:
                        raise RuntimeError(f"{name} handled {summary['done']} of {messages}: {summary}")
                rate = messages / secs
                best[name] = max(best.get(name, 0.0), rate)
                progress(f"round {r + 1}/{rounds} {name:11} {rate:8.0f} messages/s")
                q.drop()
    return {"benchmark": "throughput", "messages": messages, "rounds": rounds,
            "raw_per_s": round(best["raw"], 1), "consumer_1_per_s": round(best["consumer_1"], 1),
            "consumer_4_per_s": round(best["consumer_4"], 1),
            "ratio": round(best["consumer_4"] / best["raw"], 3),
            "ratio_1_worker": round(best["consumer_1"] / best["raw"], 3), "target_ratio": 0.8,
            # The consumer deletes through the driver: "bulk" if the driver overrides delete_many
            # with the service's bulk call, else "parallel-single" (one request per message).
            "consumer_delete": delete_mode}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print only the JSON result (progress on stderr)")
    p.add_argument("--messages", type=int, default=int(os.environ.get("QW_BENCH_MESSAGES", 1500)),
                   help="messages per drain (default 1500) [env $QW_BENCH_MESSAGES]")
    p.add_argument("--rounds", type=int, default=int(os.environ.get("QW_BENCH_ROUNDS", 3)),
                   help="rounds; the best of each contender is kept (default 3) [env $QW_BENCH_ROUNDS]")
    args = p.parse_args(argv)
    out = sys.stderr if args.json else sys.stdout
    result = measure(args.messages, args.rounds, lambda line: print(line, file=out, flush=True))
    if not args.json:
        print(f"consumer (4 workers) / raw = {result['ratio']:.2f} (target {result['target_ratio']})")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Erlang C: the fewest servers of an M/M/c queue that keep a wait quantile within a wait."""

from __future__ import annotations

import math


def erlang_c_servers(
    load: float, service_time: float, wait: float, quantile: float, limit: int = 100000
) -> int:
    """Fewest servers for which P(wait > ``wait``) <= 1 - ``quantile`` in an M/M/c queue.

    ``load`` is the offered load in busy servers (arrival rate x service time).
    """
    if load <= 0:
        return 0
    c = max(1, math.floor(load))
    while c < limit:
        if c > load:
            # Erlang C by the stable recurrence on the Erlang B blocking probability.
            b = 1.0
            for k in range(1, c + 1):
                b = load * b / (k + load * b)
            p_wait = b / (1 - (load / c) * (1 - b))
            tail = p_wait * math.exp(-(c - load) * wait / service_time)
            if tail <= 1 - quantile:
                return c
        c += 1
    return limit

"""Running the policies: every sweep value of every baseline, ours and its prior rows, the oracle,
each over N seeds (p95 pooled over all seeds' waits, cost and work the mean), in parallel.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
from collections.abc import Iterable

from bench import baselines
from bench.actuators import HEAT_UPDATE_S, POWER_OFF_S, make_actuator
from bench.oracle import Oracle
from bench.ours import PRIOR_FACTORS, make_ours
from bench.sim import simulate
from bench.traces import Trace
from bench.worlds import World, sample


@dataclasses.dataclass(frozen=True)
class Entry:
    """One policy configuration: ``ours`` (with prior factors), ``oracle``, or a baseline's value;
    ``drain`` False: Heat deletes the members it removes without draining them first."""

    kind: str
    value: float | None = None
    boot_x: float = 1.0
    service_x: float = 1.0
    drain: bool = True

    def controller(self, trace: Trace, world: World):
        if self.kind == "ours":
            return make_ours(world, self.boot_x, self.service_x)
        if self.kind == "oracle":
            return Oracle(trace, world)
        if self.value is None:
            raise ValueError(f"entry {self.kind}: a baseline needs its knob's value")
        return baselines.make(self.kind, self.value, world)


@dataclasses.dataclass(frozen=True)
class Job:
    """An entry in one world, on one trace, through one actuator, over ``seeds`` seeds."""

    world: World
    trace: Trace
    entry: Entry
    seeds: int
    actuator: str = "direct"
    update_s: float = HEAT_UPDATE_S
    power_off_s: float = POWER_OFF_S


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values, linearly interpolated (inf stays inf)."""
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    a, b = sorted_values[lo], sorted_values[hi]
    return a if a == b or k == lo else a + (b - a) * (k - lo)


def pooled(runs, target_wait_s: float) -> dict:
    """Figures of several seeds' runs: p95 of all their waits together, mean cost and work."""
    waits = [w for r in runs for w in r.waits]
    waits.sort()
    p95 = percentile(waits, 0.95)
    cost = math.fsum(r.cost for r in runs) / len(runs)
    work = math.fsum(r.work for r in runs) / len(runs)
    return {
        "cost_worker_s": round(cost, 1),
        "p95_wait_s": round(p95, 2) if math.isfinite(p95) else None,
        "meets_target": math.isfinite(p95) and p95 <= target_wait_s,
        "utilisation": round(work / cost, 3) if cost else None,
        "work_floor_worker_s": round(work, 1),
        "actions": round(sum(r.actions for r in runs) / len(runs), 1),
        "redeliveries": round(sum(r.redeliveries for r in runs) / len(runs), 1),
    }


def run_job(job: Job) -> dict:
    """Simulate one job over its seeds (1..N) and pool the figures."""
    runs = []
    for seed in range(1, job.seeds + 1):
        actuator = make_actuator(
            job.actuator, update_s=job.update_s, drain=job.entry.drain, power_off_s=job.power_off_s
        )
        runs.append(
            simulate(
                job.trace,
                job.world,
                sample(job.trace, job.world, seed),
                job.entry.controller(job.trace, job.world),
                actuator,
            )
        )
    return pooled(runs, job.world.target_wait_s)


def entries(world: World, priors: bool = True, drain_off: bool = False) -> list[Entry]:
    """Every configuration run in ``world``: ours, its prior rows, with ``drain_off`` ours once
    more with Heat's scale-in not drained, the oracle, every sweep value."""
    out = [Entry("ours")]
    if priors:
        out += [Entry("ours", None, b, s) for b, s in PRIOR_FACTORS]
    if drain_off:
        out.append(Entry("ours", drain=False))
    out.append(Entry("oracle"))
    for name in baselines.BASELINES:
        out += [Entry(name, v) for v in baselines.sweep(name, world)]
    return out


def run_all(jobs: list[Job], processes: int = 1) -> list[dict]:
    """Figures of every job, in order; ``processes`` > 1 runs them in a pool."""
    if processes <= 1 or len(jobs) <= 1:
        return [run_job(j) for j in jobs]
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ctx.Pool(processes) as pool:
        # Jobs of one world and trace are next to each other: a chunk reuses its samples' cache.
        return pool.map(run_job, jobs, chunksize=max(1, len(jobs) // (processes * 8)))


def tuned(sweep_rows: Iterable[dict]) -> dict | None:
    """The cheapest row of a sweep that meets the target (tuned by hindsight), or None."""
    meeting = [r for r in sweep_rows if r["meets_target"]]
    return min(meeting, key=lambda r: r["cost_worker_s"]) if meeting else None


def default_processes() -> int:
    """Two at most: the machines this runs on have few cores, shared."""
    return max(1, min(2, os.cpu_count() or 1))

"""Autoscaling benchmark: the real policy code against faithful baselines tuned by hindsight.

    python -m bench.autoscale [--json] [--seeds N] [--trace FILE.csv ...] [world options]
                              [--actuator direct|signal-iad|patch-dfw|... ...]

A discrete-event simulation (``bench/sim.py``) of a FIFO queue and a group of servers: a server
costs from the moment it is asked for and consumes after the world's boot time; service times
are log-normal; arrivals are Poisson following a trace. Every policy sees only what the real
monitor sees (queue stats, group size, and the booting count when the actuator reports it).

Policies: ``ours`` (the target policy built from a monitor command line: the monitor's defaults,
the world's boot and service time as the user's guesses; plus rows with a guess off by 0.5x or
2x), the baselines ``keda`` (KEDA + HPA), ``aws`` (target tracking on backlog per instance) and
``threshold`` (the seed's rule), each swept over its one knob (``bench/baselines/``), and the
``oracle``, a labelled reference that knows the arrivals (not a bound). A baseline tuned by
hindsight is its cheapest sweep value meeting the target (p95 wait <= target) on that trace.
Every figure is over ``--seeds`` seeds: p95 pooled over all their waits, cost the mean. The work
floor is the sum of the service times; utilisation is work / cost.

Output: per world and trace, worst first, the tables and the verdicts; plots of cost against p95
(``--out``); with ``--json`` one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from bench import report, sim
from bench.actuators import ACTUATOR_SPECS, HEAT_UPDATE_S, POWER_OFF_S, Direct, make_actuator
from bench.monitor_policy import MonitorPolicy
from bench.ours import ours_argv
from bench.sweep import Job, default_processes, entries, run_all
from bench.traces import Trace, builtin_traces, load_trace
from bench.worlds import DEFAULT_WORLDS, World, sample
from workload.settings import add_options, declared, option

__all__ = ["Ours", "Trace", "main", "simulate"]

HERE = Path(__file__).resolve().parent
WORLD_PICKERS = ("boot_s", "service_mean_s", "service_cv")  # World's fields that pick one world


class Ours(MonitorPolicy):
    """Ours in one world (default: the first default world), for tests that drive the policy."""

    def __init__(self, world: World = DEFAULT_WORLDS[0]):
        super().__init__("ours", ours_argv(world))


def simulate(
    trace: Trace, controller: sim.Controller, seed: int, world: World = DEFAULT_WORLDS[0]
) -> sim.Run:
    """One controller on one seed of ``trace`` in ``world``, resized directly."""
    return sim.simulate(trace, world, sample(trace, world, seed), controller, Direct())


def _key(entry) -> tuple:
    if entry.kind == "ours" and not entry.drain:
        return ("ours", "drain off")
    if entry.kind == "ours":
        return ("ours", entry.boot_x, entry.service_x)
    if entry.kind == "oracle":
        return ("oracle",)
    return (entry.kind, entry.value)


def parser() -> argparse.ArgumentParser:
    """The benchmark's options: what to run, the world, the actuator, output and running."""
    p = argparse.ArgumentParser(prog="python -m bench.autoscale", description=__doc__.split("\n\n")[0])
    _run_options(p)
    _world_options(p)
    _actuator_options(p)
    _output_options(p)
    return p


def _run_options(p: argparse.ArgumentParser) -> None:
    """Which traces, how many seeds, and the JSON switch."""
    p.add_argument(
        "--json",
        action="store_true",
        help="end with one JSON object on the last line (the tables go to stderr)",
    )
    p.add_argument(
        "--trace",
        action="append",
        metavar="FILE.csv",
        help="run this CSV trace (rows t_seconds,arrivals_per_s, rates for a 1 s service "
        "time) instead of the built-in ones; its name is the file's stem; repeatable",
    )
    option(
        p,
        "--seeds",
        env=(),
        type=int,
        lo=1,
        hi=1000,
        default=10,
        metavar="N",
        help="seeds 1..N per figure: p95 pooled over all their waits, cost the mean",
    )


def _world_options(p: argparse.ArgumentParser) -> None:
    """World's own fields (bench/worlds.py); the three that pick a world default to unset."""
    w = p.add_argument_group(
        f"the world (any of the first three: that one world instead of the default {len(DEFAULT_WORLDS)})"
    )
    add_options(w, World, defaults=dict.fromkeys(WORLD_PICKERS))


def _actuator_options(p: argparse.ArgumentParser) -> None:
    """Which actuators, and the Heat timings they share."""
    a = p.add_argument_group("the actuator")
    a.add_argument(
        "--actuator",
        action="append",
        metavar="SPEC",
        help="direct (default: resize at once), signal-iad, signal-dfw (Heat signals with the "
        "example stack's steps and cooldowns), patch-iad, patch-dfw (Heat stack "
        "updates), or all; repeatable",
    )
    for flag, default, text in (
        ("--heat-update-time", HEAT_UPDATE_S, "patch: seconds a stack update takes"),
        (
            "--power-off-time",
            POWER_OFF_S,
            "Heat: seconds from a removed server's last message (drained) or its deletion "
            "(not drained) to Nova showing it SHUTOFF; it costs until then",
        ),
    ):
        option(a, flag, env=(), type=float, lo=0, hi=3600, default=default, metavar="S", help=text)


def _output_options(p: argparse.ArgumentParser) -> None:
    """Where the plots go, what to skip, how many processes."""
    o = p.add_argument_group("output and running")
    o.add_argument("--out", default=str(HERE / "out"), help="folder for the PNG plots (default bench/out/)")
    o.add_argument("--no-plots", action="store_true", help="skip the plots")
    o.add_argument("--no-priors", action="store_true", help="skip ours' rows with wrong boot/service guesses")
    option(
        o,
        "--jobs",
        env=(),
        type=int,
        lo=1,
        default=default_processes(),
        metavar="N",
        help="processes to simulate in (on one core the default is 1)",
    )


def worlds_from_args(args: argparse.Namespace) -> list[World]:
    """The one world the options pick, or the default worlds with the options' shared fields
    (the values are World's fields, checked by the parser)."""
    values = {s.name: getattr(args, s.name) for s in declared(World)}
    given = {k: values[k] for k in WORLD_PICKERS if values[k] is not None}
    shared = {k: v for k, v in values.items() if k not in WORLD_PICKERS}
    if given:
        return [World(**given, **shared)]
    return [dataclasses.replace(w, **shared) for w in DEFAULT_WORLDS]


def run(args, worlds, traces, actuators) -> dict:
    """Every job of every actuator, world and trace; the result object of ``--json``."""
    plan = []
    for act in actuators:
        for world in worlds:
            for trace in traces:
                for entry in entries(world, priors=not args.no_priors, drain_off=act != "direct"):
                    plan.append((act, world, trace, entry))
    jobs = [
        Job(world, trace, entry, args.seeds, act, args.heat_update_time, args.power_off_time)
        for act, world, trace, entry in plan
    ]
    figures = run_all(jobs, args.jobs)
    grouped: dict = {}
    for (act, world, trace, entry), fig in zip(plan, figures, strict=True):
        grouped.setdefault((act, world), {}).setdefault(trace.name, {})[_key(entry)] = fig
    result = {"target_wait_s": args.target_wait_s, "seeds": args.seeds, "actuators": actuators, "worlds": []}
    for (act, world), by_trace in grouped.items():
        result["worlds"].append(
            {
                **world.as_dict(),
                "actuator": act,
                "traces": {t: report.trace_result(rows) for t, rows in by_trace.items()},
            }
        )
    return result


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    worlds = worlds_from_args(args)
    actuators = args.actuator or ["direct"]
    if "all" in actuators:
        actuators = list(ACTUATOR_SPECS)
    for spec in actuators:
        try:
            make_actuator(spec)
        except ValueError as e:
            p.error(str(e))
    try:
        traces = [load_trace(f) for f in args.trace] if args.trace else builtin_traces()
    except (OSError, ValueError) as e:
        p.error(str(e))
    if len({t.name for t in traces}) != len(traces):
        p.error("--trace: two traces have the same file name (stem); rename one")
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    began = time.monotonic()
    result = run(args, worlds, traces, actuators)
    for w in result["worlds"]:
        world = World(w["boot_s"], w["service_mean_s"], w["service_cv"], w["max_servers"], args.target_wait_s)
        for line in report.world_lines(world, w["actuator"], w["traces"]):
            say(line)
        if not args.no_plots:
            for name, tr in w["traces"].items():
                report.plot(world, w["actuator"], name, tr, Path(args.out))
    for line in report.summary_lines(result):
        say(line)
    if not args.no_plots:
        say(f"plots: {args.out}")
    say(f"({time.monotonic() - began:.0f}s, {args.seeds} seeds, {args.jobs} processes)")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

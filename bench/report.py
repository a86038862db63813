"""What the benchmark prints: the JSON object, the verdict per trace and world, the text tables
and the cost-p95 plots."""

from __future__ import annotations

import math
from pathlib import Path

from bench import baselines
from bench.sweep import tuned
from bench.worlds import World

FIGURES = ("cost_worker_s", "p95_wait_s", "meets_target", "utilisation")


def _fig(row: dict) -> dict:
    return {k: row[k] for k in FIGURES}


def _with_redeliveries(row: dict) -> dict:
    """The figures and the messages done again per seed (members deleted holding one)."""
    return {**_fig(row), "redeliveries": row["redeliveries"]}


def trace_result(rows: dict) -> dict:
    """One trace's JSON from its rows: ``rows[("ours", bx, sx)]``, ``rows[("ours", "drain off")]``
    (Heat actuators), ``rows[("oracle",)]``, ``rows[(baseline, value)]``."""
    ours = rows[("ours", 1.0, 1.0)]
    out = {
        "work_floor_worker_s": ours["work_floor_worker_s"],
        "ours": _with_redeliveries(ours),
        "ours_priors": [
            {"boot_prior_x": k[1], "service_prior_x": k[2], **_fig(r)}
            for k, r in rows.items()
            if k[0] == "ours" and len(k) == 3 and k[1:] != (1.0, 1.0)
        ],
        "oracle": _fig(rows[("oracle",)]),
        "baselines": {},
    }
    if ("ours", "drain off") in rows:
        out["ours_drain_off"] = _with_redeliveries(rows[("ours", "drain off")])
    for name in baselines.BASELINES:
        out["baselines"][name] = [
            {
                "knob": baselines.knob(name),
                "value": k[1],
                "cost_worker_s": r["cost_worker_s"],
                "p95_wait_s": r["p95_wait_s"],
                "meets_target": r["meets_target"],
            }
            for k, r in rows.items()
            if k[0] == name
        ]
    out["verdict"] = verdict(out)
    return out


def _p95(row: dict) -> float:
    return math.inf if row["p95_wait_s"] is None else row["p95_wait_s"]


def verdict(tr: dict) -> dict:
    """Ours against the baselines tuned by hindsight on this trace.

    Where some baseline meets the target: ``ours_over_cheapest_tuned`` (cost ratio) and whether
    ours meets it too. Where none does: the lowest p95 any sweep value reached, at what cost,
    next to ours.
    """
    ours = tr["ours"]
    tuned_rows = {n: tuned(rows) for n, rows in tr["baselines"].items()}
    meeting = {n: r for n, r in tuned_rows.items() if r}
    v: dict = {
        "tuned": {n: (r["value"] if r else None) for n, r in tuned_rows.items()},
        "ours_meets_target": ours["meets_target"],
        "utilisation": ours["utilisation"],
    }
    if meeting:
        best = min(meeting, key=lambda n: meeting[n]["cost_worker_s"])
        v["cheapest_tuned"] = {
            "baseline": best,
            "value": meeting[best]["value"],
            "cost_worker_s": meeting[best]["cost_worker_s"],
            "p95_wait_s": meeting[best]["p95_wait_s"],
        }
        v["ours_over_cheapest_tuned"] = round(ours["cost_worker_s"] / meeting[best]["cost_worker_s"], 3)
        v["aim_met"] = ours["meets_target"] and v["ours_over_cheapest_tuned"] <= 0.9
    else:
        allrows = [(n, r) for n, rows in tr["baselines"].items() for r in rows]
        n, r = min(allrows, key=lambda nr: (_p95(nr[1]), nr[1]["cost_worker_s"]))
        v["cheapest_tuned"] = None
        v["ours_over_cheapest_tuned"] = None
        v["lowest_baseline_p95"] = {
            "baseline": n,
            "value": r["value"],
            "p95_wait_s": r["p95_wait_s"],
            "cost_worker_s": r["cost_worker_s"],
        }
        v["aim_met"] = _p95(ours) <= _p95(r) and ours["cost_worker_s"] <= r["cost_worker_s"]
    return v


def badness(v: dict, ours: dict) -> tuple:
    """Sort key, worst first: ours misses where a baseline meets, then the highest cost ratio,
    then (none meets) the highest p95 of ours over the best baseline p95."""
    if v["cheapest_tuned"]:
        return (0 if not v["ours_meets_target"] else 1, -v["ours_over_cheapest_tuned"])
    best = v["lowest_baseline_p95"]["p95_wait_s"] or math.inf
    return (2, -(_p95(ours) / best if best else math.inf))


def _num(x, fmt="{:.0f}") -> str:
    return "inf" if x is None else fmt.format(x)


def _cell(r: dict) -> str:
    return f"{_num(r['cost_worker_s'])} / {_num(r['p95_wait_s'], '{:.1f}')}{'*' if r['meets_target'] else ''}"


def world_lines(world: World, actuator: str, traces: dict) -> list[str]:
    """The text report of one world: per trace, worst first."""
    lines = [
        f"\n== world: {world.label}, max {world.max_servers} servers, target p95 "
        f"{world.target_wait_s:g}s, actuator {actuator}",
        "   (cost worker-s / pooled p95 s, * meets the target; tuned = cheapest sweep value meeting it)",
    ]
    order = sorted(traces, key=lambda t: badness(traces[t]["verdict"], traces[t]["ours"]))
    for name in order:
        tr = traces[name]
        v = tr["verdict"]
        lines.append(
            f"  {name}: work floor {tr['work_floor_worker_s']:.0f}; ours {_cell(tr['ours'])} "
            f"(utilisation {_num(tr['ours']['utilisation'], '{:.2f}')}); "
            f"oracle (reference) {_cell(tr['oracle'])}"
        )
        if v["cheapest_tuned"]:
            c = v["cheapest_tuned"]
            lines.append(
                f"    ours / cheapest tuned ({c['baseline']} {baselines.knob(c['baseline'])}="
                f"{c['value']:g}, {c['cost_worker_s']:.0f}): {v['ours_over_cheapest_tuned']:.3f}"
                f"{'' if v['ours_meets_target'] else '  (ours misses the target)'}"
            )
        else:
            b = v["lowest_baseline_p95"]
            lines.append(
                f"    no baseline meets the target; lowest baseline p95 {_num(b['p95_wait_s'], '{:.1f}')}"
                f" ({b['baseline']} {baselines.knob(b['baseline'])}={b['value']:g}, cost "
                f"{b['cost_worker_s']:.0f}) vs ours {_num(tr['ours']['p95_wait_s'], '{:.1f}')}"
            )
        for bname, rows in tr["baselines"].items():
            cells = "  ".join(f"{r['value']:g}:{_cell(r)}" for r in rows)
            lines.append(f"    {bname:<9} {cells}")
        priors = "  ".join(f"{_prior(p)}: {_cell(p)}" for p in tr["ours_priors"])
        if priors:
            lines.append(f"    ours priors  {priors}")
        if "ours_drain_off" in tr:
            on, off = tr["ours"], tr["ours_drain_off"]
            lines.append(
                f"    ours scale-in  drain on: {_cell(on)}, {on['redeliveries']:g} redelivered; "
                f"drain off: {_cell(off)}, {off['redeliveries']:g} redelivered (per seed)"
            )
    return lines


def _prior(p: dict) -> str:
    return f"boot {p['boot_prior_x']:g}x" if p["boot_prior_x"] != 1 else f"service {p['service_prior_x']:g}x"


def plot(world: World, actuator: str, trace: str, tr: dict, out: Path) -> Path:
    """Cost against pooled p95: every sweep point of every baseline, ours, its prior rows, the
    oracle; the target and the work floor drawn as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    cap = 10 * world.target_wait_s  # never-started messages (inf p95) are drawn at the top
    _plot_baselines(ax, tr["baselines"], cap)
    _plot_ours(ax, tr["ours"], tr["ours_priors"], cap)
    _plot_oracle(ax, tr["oracle"], cap)
    _plot_frame(ax, world, actuator, trace, tr["work_floor_worker_s"], cap)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / (
        f"{trace}-boot{world.boot_s:g}-svc{world.service_mean_s:g}-cv{world.service_cv:g}-{actuator}.png"
    )
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _plot_baselines(ax, baseline_rows: dict, cap: float) -> None:
    """One line per baseline through its sweep points, each labelled with its knob's value."""
    for name, rows in baseline_rows.items():
        xs = [r["cost_worker_s"] for r in rows]
        ys = [min(cap, _p95(r)) for r in rows]
        ax.plot(xs, ys, marker="o", label=f"{name} ({baselines.knob(name)})")
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(f"{r['value']:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")


def _plot_ours(ax, ours: dict, priors: list[dict], cap: float) -> None:
    """Ours as a star, its wrong-guess rows as grey triangles labelled with the guesses."""
    ax.plot(
        [ours["cost_worker_s"]],
        [min(cap, _p95(ours))],
        marker="*",
        markersize=16,
        color="black",
        linestyle="none",
        label="ours",
    )
    for p in priors:
        ax.plot([p["cost_worker_s"]], [min(cap, _p95(p))], marker="^", color="grey", linestyle="none")
        ax.annotate(
            f"ours {_prior(p)}",
            (p["cost_worker_s"], min(cap, _p95(p))),
            fontsize=7,
            xytext=(3, -9),
            textcoords="offset points",
            color="grey",
        )


def _plot_oracle(ax, oracle: dict, cap: float) -> None:
    """The oracle as a red cross (a reference, not a bound)."""
    ax.plot(
        [oracle["cost_worker_s"]],
        [min(cap, _p95(oracle))],
        marker="x",
        markersize=10,
        color="red",
        linestyle="none",
        label="oracle (reference, knows arrivals)",
    )


def _plot_frame(ax, world: World, actuator: str, trace: str, work_floor: float, cap: float) -> None:
    """The target and work-floor lines, log axes, labels, title and legend."""
    ax.axhline(world.target_wait_s, color="green", linestyle="--", linewidth=1, label="target p95")
    ax.axvline(work_floor, color="brown", linestyle=":", linewidth=1, label="work floor")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("cost (worker-seconds, mean over seeds)")
    ax.set_ylabel(f"p95 wait (s, pooled over seeds; above {cap:g} or never drawn at {cap:g})")
    ax.set_title(f"{trace}: {world.label}, max {world.max_servers}, actuator {actuator}", fontsize=10)
    ax.legend(fontsize=8)


def summary_lines(result: dict) -> list[str]:
    """Worst case per world: the highest ours / cheapest tuned ratio, misses, where none meets."""
    lines = ["\n== worst case per world (ours vs the cheapest baseline tuned by hindsight)"]
    for w in result["worlds"]:
        traces = w["traces"]
        order = sorted(traces, key=lambda t: badness(traces[t]["verdict"], traces[t]["ours"]))
        parts = []
        for t in order:
            v, o = traces[t]["verdict"], traces[t]["ours"]
            if v["cheapest_tuned"]:
                parts.append(
                    f"{t} {v['ours_over_cheapest_tuned']:.2f}x"
                    f"{'' if o['meets_target'] else ' (ours misses: p95 ' + _num(o['p95_wait_s'], '{:.1f}') + ')'}"
                )
            else:
                parts.append(
                    f"{t} no baseline meets (ours p95 {_num(o['p95_wait_s'], '{:.1f}')}, best baseline "
                    f"{_num(v['lowest_baseline_p95']['p95_wait_s'], '{:.1f}')})"
                )
        aim = sum(1 for t in traces if traces[t]["verdict"]["aim_met"])
        lines.append(
            f"  boot {w['boot_s']:g}s service {w['service_mean_s']:g}s cv {w['service_cv']:g} "
            f"[{w['actuator']}]: aim met on {aim}/{len(traces)}; " + "; ".join(parts)
        )
    return lines

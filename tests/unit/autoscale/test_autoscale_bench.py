"""bench.autoscale on tiny traces: the JSON contract, the plot, the CSV errors, and that the
simulated fleet charges boot time and serves messages FIFO."""
from __future__ import annotations

import json
import math
import random

import pytest

from bench import autoscale as sim

POLICIES = {"ours", "threshold", "keda", "aws", "clairvoyant"}
FIELDS = {"cost_worker_s", "p50_wait_s", "p95_wait_s", "max_wait_s", "over_target_s", "actions",
          "meets_target"}


def test_json_contract_and_plot_on_a_tiny_trace(tmp_path, capsys):
    trace = tmp_path / "tiny.csv"
    trace.write_text("t_seconds,arrivals_per_s\n0,1\n120,6\n300,0\n420,0\n")
    out = tmp_path / "plots"
    assert sim.main(["--json", "--trace", str(trace), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["target_wait_s"] == sim.TARGET_WAIT_S
    assert set(result["traces"]) == {"tiny"}
    by_policy = result["traces"]["tiny"]
    assert set(by_policy) == POLICIES
    for figures in by_policy.values():
        assert FIELDS <= set(figures)
        assert figures["cost_worker_s"] > 0
        assert figures["meets_target"] == (figures["p95_wait_s"] is not None
                                           and figures["p95_wait_s"] <= sim.TARGET_WAIT_S)
    assert (out / "tiny.png").stat().st_size > 10000


def test_bad_csv_is_refused_naming_the_row(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("t_seconds,arrivals_per_s\n0,1\n60,-2\n")
    with pytest.raises(ValueError, match="bad.csv:3: arrivals_per_s='-2'"):
        sim.load_trace(bad)
    bad.write_text("0,1\n0,2\n")
    with pytest.raises(ValueError, match="must be after 0"):
        sim.load_trace(bad)


def test_builtin_traces_load():
    for name in sim.BUILTIN_TRACES:
        trace = sim.load_trace(sim.TRACES_DIR / f"{name}.csv")
        assert trace.name == name and trace.end > 0


def test_fleet_charges_boot_and_serves_fifo():
    arrivals = [100.0 + i for i in range(10)]  # 10 messages, one a second from t=100
    fleet = sim.Fleet(arrivals, lambda: 2.0, boot_s=60.0)
    fleet.resize(1, 90.0)  # ready at 150: every message waits for the boot
    fleet.advance(1000.0)
    assert fleet.waits[0] == pytest.approx(50.0)
    starts = [s for _, s in fleet.starts]
    assert starts == sorted(starts) and starts[1] - starts[0] == pytest.approx(2.0)
    fleet.close(1000.0)
    assert fleet.cost == pytest.approx(910.0)


def test_same_seed_same_figures():
    trace = sim.Trace("t", (0.0, 600.0), (3.0,))
    a, _ = sim.simulate(trace, sim.Ours(), 7)
    b, _ = sim.simulate(trace, sim.Ours(), 7)
    assert a == b


def test_over_target_is_a_union_of_late_intervals():
    # Two late messages whose late intervals overlap, one on time.
    starts = [(0.0, 40.0), (5.0, 50.0), (60.0, 61.0)]
    assert sim.over_target(starts, 30.0) == pytest.approx(50.0 - 30.0)
    assert math.isclose(sim.percentile(sorted([1.0, 2.0, 3.0, 4.0]), 0.5), 2.5)


def test_poisson_arrivals_follow_the_rate():
    trace = sim.Trace("t", (0.0, 1000.0, 2000.0), (2.0, 0.0))
    arr = trace.arrivals(random.Random(1))
    assert 1800 < len(arr) < 2200 and max(arr) < 1000.0

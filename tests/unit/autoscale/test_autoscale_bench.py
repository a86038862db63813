"""bench.autoscale end to end on a tiny trace (the JSON contract, the plots, bad input), and the
simulated fleet (boot time charged, FIFO, Poisson arrivals)."""

from __future__ import annotations

import json
import random

import pytest

from bench import autoscale
from bench.actuators import Direct
from bench.ours import make_ours
from bench.sim import Fleet, ScaleIn, simulate
from bench.traces import BUILTIN_TRACES, TRACES_DIR, Trace, load_trace
from bench.worlds import Sample, World, sample

FIGURES = {"cost_worker_s", "p95_wait_s", "meets_target", "utilisation"}


@pytest.fixture
def tiny(tmp_path):
    trace = tmp_path / "tiny.csv"
    trace.write_text("t_seconds,arrivals_per_s\n0,1\n120,6\n240,0\n300,0\n")
    return trace


def test_json_contract_and_plots_on_a_tiny_trace(tiny, tmp_path, capsys):
    out = tmp_path / "plots"
    argv = [
        "--json",
        "--trace",
        str(tiny),
        "--seeds",
        "2",
        "--boot-time",
        "30",
        "--service-mean",
        "1",
        "--service-cv",
        "0.5",
        "--max-servers",
        "20",
        "--target-wait",
        "20",
        "--out",
        str(out),
        "--jobs",
        "1",
    ]
    assert autoscale.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["target_wait_s"] == 20 and result["seeds"] == 2
    [world] = result["worlds"]
    assert {k: world[k] for k in ("boot_s", "service_mean_s", "service_cv", "max_servers")} == {
        "boot_s": 30,
        "service_mean_s": 1,
        "service_cv": 0.5,
        "max_servers": 20,
    }
    tr = world["traces"]["tiny"]
    assert tr["work_floor_worker_s"] > 0
    for fig in [tr["ours"], tr["oracle"]] + tr["ours_priors"]:
        assert set(fig) >= FIGURES
        assert fig["meets_target"] == (fig["p95_wait_s"] is not None and fig["p95_wait_s"] <= 20)
        # No fleet does the work for less than the work itself.
        assert fig["cost_worker_s"] >= tr["work_floor_worker_s"]
        assert fig["utilisation"] == pytest.approx(tr["work_floor_worker_s"] / fig["cost_worker_s"], abs=1e-3)
    assert {(p["boot_prior_x"], p["service_prior_x"]) for p in tr["ours_priors"]} == {
        (0.5, 1.0),
        (2.0, 1.0),
        (1.0, 0.5),
        (1.0, 2.0),
    }
    assert set(tr["baselines"]) == {"keda", "aws", "threshold"}
    for name, rows in tr["baselines"].items():
        assert len(rows) >= 6
        assert {r["knob"] for r in rows} == {
            {"keda": "queueLength", "aws": "target_backlog_per_instance", "threshold": "-j"}[name]
        }
        assert all(set(r) == {"knob", "value", "cost_worker_s", "p95_wait_s", "meets_target"} for r in rows)
    v = tr["verdict"]
    if v["cheapest_tuned"]:
        assert v["ours_over_cheapest_tuned"] == pytest.approx(
            tr["ours"]["cost_worker_s"] / v["cheapest_tuned"]["cost_worker_s"], abs=1e-3
        )
    assert (out / "tiny-boot30-svc1-cv0.5-direct.png").stat().st_size > 10000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0"], "argument --seeds: '0' is not allowed: an integer from 1 to 1000"),
        (["--seeds", "ten"], "argument --seeds: 'ten' is not allowed: an integer from 1 to 1000"),
        (["--jobs", "0"], "argument --jobs: '0' is not allowed: an integer of at least 1"),
        (["--boot-time", "-5"], "argument --boot-time: '-5' is not allowed: a number from 0 to 3600"),
        (["--service-cv", "9"], "argument --service-cv: '9' is not allowed: a number from 0 to 5"),
        (["--max-servers", "0"], "argument --max-servers: '0' is not allowed: an integer from 1 to 1000"),
        (
            ["--power-off-time", "4000"],
            "argument --power-off-time: '4000' is not allowed: a number from 0 to 3600",
        ),
        (["--actuator", "heat"], "--actuator='heat' is not allowed: one of direct, signal-iad"),
    ],
)
def test_bad_options_are_refused_naming_them(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        autoscale.main(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_csv_is_refused_naming_the_row(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("t_seconds,arrivals_per_s\n0,1\n60,-2\n")
    with pytest.raises(ValueError, match="bad.csv:3: arrivals_per_s='-2'"):
        load_trace(bad)
    bad.write_text("0,1\n0,2\n")
    with pytest.raises(ValueError, match="must be after 0"):
        load_trace(bad)


def test_builtin_traces_load():
    for name in BUILTIN_TRACES:
        trace = load_trace(TRACES_DIR / f"{name}.csv")
        assert trace.name == name and trace.end > 0


def test_fleet_charges_boot_and_serves_fifo():
    arrivals = tuple(100.0 + i for i in range(10))  # 10 messages, one a second from t=100
    fleet = Fleet(Sample(arrivals, (2.0,) * 10), boot_s=60.0, max_servers=5)
    fleet.resize(1, 90.0)  # ready at 150: every message waits for the boot
    fleet.advance(1000.0)
    assert fleet.waits[0] == pytest.approx(50.0)
    # One server, 2 s each: message k starts at 150 + 2k.
    assert fleet.waits == pytest.approx([150 + 2 * k - (100 + k) for k in range(10)])
    fleet.close(1000.0)
    assert fleet.cost == pytest.approx(910.0)


def test_a_drained_server_finishes_its_message_and_costs_until_it_is_off():
    fleet = Fleet(Sample((0.0,), (50.0,)), boot_s=0.0, max_servers=5)
    fleet.resize(1, 0.0)
    fleet.advance(10.0)
    fleet.resize(0, 10.0, scale_in=ScaleIn(drain=True, power_off_s=3.0))
    assert fleet.observe(20.0).stats.claimed == 1  # still processing after its removal
    fleet.settle(100.0)
    assert fleet.cost == pytest.approx(53.0)  # its message ends at 50, SHUTOFF 3 s later
    assert fleet.redeliveries == 0 and fleet.waits == [0.0]


def test_a_server_deleted_mid_message_loses_it_until_the_claim_lapses_then_it_is_done_again():
    # Two messages of 50 s; the server holding the first is deleted at 10 s without a drain.
    fleet = Fleet(Sample((0.0, 1.0), (50.0, 50.0)), boot_s=0.0, max_servers=5)
    fleet.resize(2, 0.0)
    fleet.advance(10.0)
    fleet.resize(1, 10.0, oldest_first=True, scale_in=ScaleIn(drain=False, power_off_s=3.0, claim_ttl_s=300))
    assert fleet.redeliveries == 1
    seen = fleet.observe(30.0).stats
    assert (seen.free, seen.claimed) == (0, 2)  # the queue still counts the dead one's claim
    assert fleet.observe(100.0).stats.claimed == 1  # the other's message is done; the claim holds
    fleet.advance(330.0)
    seen = fleet.observe(330.0).stats
    assert (seen.free, seen.claimed) == (0, 1)  # visible again at 310, started by the other server
    assert fleet.waits == pytest.approx([310.0, 0.0])  # its wait runs to the start that finishes it
    assert fleet.idle()
    fleet.settle(330.0)
    assert fleet.cost == pytest.approx(13.0)  # the deleted one: asked at 0, off 3 s after 10


def test_drain_off_rows_count_redeliveries_the_drained_scale_in_avoids(tmp_path, capsys):
    # The load falls to a third while every server is busy: Heat's scale-in takes busy members.
    drop = tmp_path / "drop.csv"
    drop.write_text("t_seconds,arrivals_per_s\n0,6\n300,2\n900,0\n960,0\n")
    argv = ["--json", "--trace", str(drop), "--seeds", "2", "--boot-time", "30", "--service-mean", "5"]
    argv += ["--no-priors", "--no-plots", "--jobs", "1", "--actuator", "patch-iad"]
    assert autoscale.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    tr = result["worlds"][0]["traces"]["drop"]
    assert tr["ours"]["redeliveries"] == 0
    assert tr["ours_drain_off"]["redeliveries"] > 0
    assert (
        tr["ours_drain_off"]["cost_worker_s"] > tr["ours"]["cost_worker_s"]
    )  # lost work redone, claims held


def test_same_seed_same_figures_and_the_sample_is_the_same_for_every_policy():
    trace, world = Trace("t", (0.0, 600.0), (3.0,)), World()
    a = simulate(trace, world, sample(trace, world, 7), make_ours(world), Direct())
    b = simulate(trace, world, sample(trace, world, 7), make_ours(world), Direct())
    assert (a.waits, a.cost) == (b.waits, b.cost)
    assert sample(trace, world, 7).work == pytest.approx(a.work)


def test_poisson_arrivals_follow_the_rate_and_worlds_scale_it_by_the_service_time():
    trace = Trace("t", (0.0, 1000.0, 2000.0), (2.0, 0.0))
    arr = trace.arrivals(random.Random(1))
    assert 1800 < len(arr) < 2200 and max(arr) < 1000.0
    slow = sample(trace, World(service_mean_s=5.0, service_cv=1.5), 1)
    assert 330 < len(slow.arrivals) < 470  # 2/s for a 1 s service is 0.4/s for a 5 s one
    mean = slow.work / len(slow.services)
    assert 4.0 < mean < 6.0


def test_every_actuator_asked_for_gets_its_own_world_rows(tiny, capsys):
    argv = [
        "--json",
        "--trace",
        str(tiny),
        "--seeds",
        "1",
        "--boot-time",
        "30",
        "--no-priors",
        "--no-plots",
        "--jobs",
        "1",
        "--actuator",
        "direct",
        "--actuator",
        "signal-iad",
    ]
    assert autoscale.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["actuators"] == ["direct", "signal-iad"]
    direct, signal = result["worlds"]
    assert (direct["actuator"], signal["actuator"]) == ("direct", "signal-iad")
    assert signal["traces"]["tiny"]["ours_priors"] == []
    # One step of 2 per 300 s cooldown cannot follow the burst the way a direct resize does.
    assert signal["traces"]["tiny"]["ours"]["p95_wait_s"] > direct["traces"]["tiny"]["ours"]["p95_wait_s"]


def test_the_old_entry_points_still_drive_the_policy():
    trace = Trace("steady", (0.0, 300.0), (2.0,))
    run = autoscale.simulate(trace, autoscale.Ours(), 3)
    assert run.cost > run.work > 0 and len(run.waits) > 400

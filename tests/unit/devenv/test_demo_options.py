"""The demo's options (devenv.demo.DemoOptions): declared once, parsed from flags and the
environment by the settings machinery, bad values refused in the project's words (no services)."""

from __future__ import annotations

import pytest

from devenv import demo
from workload import settings

DEMO_ENV = ("DEMO_SECONDS", "DEMO_BACKEND", "QW_DEMO_OUT")


@pytest.fixture(autouse=True)
def no_demo_env(monkeypatch):
    """Each test starts without the demo's variables (a developer's shell may set them)."""
    for name in DEMO_ENV:
        monkeypatch.delenv(name, raising=False)


def test_every_option_is_declared_once_with_its_flag_and_help():
    declared = settings.declared(demo.DemoOptions)
    assert [s.long_flag for s in declared] == [
        "--seconds",
        "--backend",
        "--max-workers",
        "--work-s",
        "--peak",
        "--burst",
        "--low",
        "--interval",
        "--target-wait",
        "--out",
    ]
    assert all(s.help for s in declared)
    assert {v for s in declared for v in s.env} == set(DEMO_ENV)


def test_the_defaults_with_the_unset_rates_and_folder_filled_in():
    opts = demo.parse_args([])
    assert (opts.seconds, opts.backend, opts.max_workers, opts.work_s) == (90.0, "zaqar", 6, 0.4)
    assert (opts.low, opts.interval, opts.target_wait) == (1.0, 1.0, 5.0)
    # 2.5 messages/s per worker at 0.4 s each: the ramp tops at what 4 handle (80 %), the burst 6 (90 %).
    assert opts.peak == pytest.approx(8.0) and opts.burst == pytest.approx(13.5)
    assert opts.out == str(demo.REPO_ROOT / "demo-out")


def test_flags_after_a_double_dash_reach_the_demo():
    opts = demo.parse_args(["--", "--max-workers", "4", "--seconds", "30", "--peak", "3", "--out", "o"])
    assert (opts.max_workers, opts.seconds, opts.peak, opts.out) == (4, 30.0, 3.0, "o")


def test_environment_variables_apply_and_flags_override_them(monkeypatch):
    monkeypatch.setenv("DEMO_SECONDS", "40")
    monkeypatch.setenv("DEMO_BACKEND", "amqp")
    monkeypatch.setenv("QW_DEMO_OUT", "elsewhere")
    opts = demo.parse_args([])
    assert (opts.seconds, opts.backend, opts.out) == (40.0, "amqp", "elsewhere")
    opts = demo.parse_args(["--seconds", "20", "--backend", "sqs", "--out", "here"])
    assert (opts.seconds, opts.backend, opts.out) == (20.0, "sqs", "here")


def test_empty_variables_leave_the_defaults(monkeypatch):
    for name in DEMO_ENV:
        monkeypatch.setenv(name, "")
    opts = demo.parse_args([])
    assert (opts.seconds, opts.backend, opts.out) == (90.0, "zaqar", str(demo.REPO_ROOT / "demo-out"))


@pytest.mark.parametrize(
    "env, argv, message",
    [
        ({"DEMO_SECONDS": "600"}, [], "demo length 600 s is not allowed: from 15 to 120 s"),
        ({}, ["--seconds", "10"], "demo length 10 s is not allowed: from 15 to 120 s"),
        (
            {"DEMO_SECONDS": "soon"},
            [],
            "environment variable DEMO_SECONDS='soon' is not allowed: a number",
        ),
        (
            {"DEMO_BACKEND": "kafka"},
            [],
            "environment variable DEMO_BACKEND='kafka' is not allowed: one of zaqar, amqp, sqs",
        ),
        ({}, ["--backend", "kafka"], "argument --backend: 'kafka' is not allowed: one of zaqar, amqp, sqs"),
        (
            {},
            ["--max-workers", "20"],
            "argument --max-workers: '20' is not allowed: an integer from 1 to 16",
        ),
        ({}, ["--work-s", "10"], "argument --work-s: '10' is not allowed: a number from 0.01 to 5"),
        ({}, ["--low", "many"], "argument --low: 'many' is not allowed: a number"),
    ],
)
def test_bad_values_are_refused_with_usage_and_what_is_allowed(monkeypatch, capsys, env, argv, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        demo.parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m devenv demo")
    assert err.rstrip().endswith(f"python -m devenv demo: error: {message}")

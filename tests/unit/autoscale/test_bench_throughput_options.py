"""The throughput benchmark refuses a bad option or variable before it starts any service."""

from __future__ import annotations

import pytest

from bench import throughput


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--messages", "5"], {}, "argument --messages: '5' is not allowed: an integer of at least 100"),
        (["--rounds", "0"], {}, "argument --rounds: '0' is not allowed: an integer of at least 1"),
        (
            ["--backends", "zaqar,kafka"],
            {},
            "--backends='zaqar,kafka' is not allowed: a comma-separated list of zaqar, amqp",
        ),
        (
            [],
            {"QW_BENCH_MESSAGES": "lots"},
            "environment variable QW_BENCH_MESSAGES='lots' is not allowed: an integer of at least 100",
        ),
    ],
)
def test_bad_options_are_refused_naming_them(argv, env, message, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit:
        throughput.main(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_the_environment_sets_the_defaults(monkeypatch):
    monkeypatch.setenv("QW_BENCH_MESSAGES", "250")
    monkeypatch.setenv("QW_BENCH_BACKENDS", "amqp")
    args = throughput.parser().parse_args([])
    assert (args.messages, args.rounds, args.backends) == (250, 3, "amqp")

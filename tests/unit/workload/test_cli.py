"""The CLI without a queue service: --help of every mode, environment variables, usage errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workload import cli, settings

REPO = Path(__file__).resolve().parents[3]
MODES = ("producer", "consumer", "monitor", "status", "redrive", "purge", "delete", "ensure")


def run(
    *argv: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = (), **kw
) -> subprocess.CompletedProcess:
    """The CLI in a child process, without this process's QW_*, OS_* (and ``unset``) variables."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("QW_", "OS_", *unset))}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "workload", *argv],
        capture_output=True,
        text=True,
        env=e,
        cwd=REPO,
        timeout=60,
        **kw,
    )


def test_top_level_help_lists_every_mode_and_exit_codes():
    out = run("--help")
    assert out.returncode == 0
    for mode in MODES:
        assert mode in out.stdout
    assert "Exit codes" in out.stdout


# The monitor's own options (workload.autoscale) are checked by their owners' tests; here only
# the options this CLI gives every mode.


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_has_help_and_every_option_names_its_env_var(mode):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "mode").choices[mode]
    for group in sub._action_groups:
        for action in group._group_actions:
            if action.dest in ("help", "command", "yes"):
                continue
            assert action.help and "[env $" in action.help, f"{mode} {action.option_strings} has no env"
    out = run(mode, "--help")
    assert out.returncode == 0 and "--queue" in out.stdout and "QW_QUEUE" in out.stdout


def test_console_script_is_installed():
    exe = shutil.which("queue-workers", path=str(Path(sys.executable).parent))
    assert exe, "queue-workers console script missing from the venv"
    out = subprocess.run([exe, "consumer", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--concurrency" in out.stdout


def test_seed_options_keep_their_meaning():
    p = cli.build_parser()
    a = p.parse_args(["producer", "-q", "demo0000", "-t", "0.5", "-r", "IAD", "-d"])
    assert (a.queue, a.interval, a.region, a.debug) == ("demo0000", 0.5, "IAD", True)
    a = p.parse_args(["status", "--queue_name", "q", "--time_interval", "2"])
    assert (a.queue, a.interval) == ("q", 2.0)
    a = p.parse_args(["monitor", "-x", "3", "-m", "1", "-j", "50", "-n", "0", "-c", "30", "-g", "grp"])
    from workload.autoscale.monitor import policy_from_args

    policy = policy_from_args(a)
    assert policy.name == "threshold" and a.group == "grp"
    c = policy.config
    assert (
        c.max_size,
        c.min_size,
        c.scale_up_threshold,
        c.scale_down_threshold,
        c.up_cooldown_s,
        c.down_cooldown_s,
    ) == (3, 1, 50, 0, 30.0, 30.0)


def test_environment_variables_set_defaults_and_flags_override(monkeypatch):
    monkeypatch.setenv("QW_QUEUE", "from-env")
    monkeypatch.setenv("QW_QUEUE_BACKEND", "sqs")
    monkeypatch.setenv("QW_CONCURRENCY", "4")
    monkeypatch.setenv("QW_NO_BULK_DELETE", "yes")
    monkeypatch.setenv("OS_CLOUD", "mycloud")
    a = cli.build_parser().parse_args(["consumer"])
    assert (a.queue, a.backend, a.concurrency, a.no_bulk_delete, a.os_cloud) == (
        "from-env",
        "sqs",
        4,
        True,
        "mycloud",
    )
    a = cli.build_parser().parse_args(["consumer", "-q", "flag", "-w", "2"])
    assert (a.queue, a.concurrency) == ("flag", 2)


def test_legacy_backend_variable_is_read(monkeypatch):
    monkeypatch.setenv("QW_BACKEND", "sqs")
    assert cli.build_parser().parse_args(["status"]).backend == "sqs"


def test_bad_environment_value_names_the_variable():
    out = run("consumer", "--help", env={"QW_BATCH": "many"})
    assert out.returncode == 2 and "QW_BATCH='many'" in out.stderr


def test_env_value_outside_an_option_choices_names_the_variable_and_the_choices():
    out = run("monitor", "--help", env={"QW_HEAT_MODE": "sometimes"})
    assert out.returncode == 2
    assert "QW_HEAT_MODE='sometimes'" in out.stderr and "signal, alarm, patch" in out.stderr


def test_bad_flag_env_value_names_the_variable():
    debug = next(s for s in settings.declared(settings.OutputOptions) if s.name == "debug")
    with pytest.raises(
        settings.SettingError, match="QW_DEBUG='maybe' is not allowed: one of 1/0, true/false"
    ):
        debug.from_env({"QW_DEBUG": "maybe"})


def test_delete_without_yes_refuses_before_touching_the_service():
    out = run("delete", "-q", "precious", "--zaqar-url", "http://127.0.0.1:9")
    assert out.returncode == 2 and "--yes" in out.stderr and "precious" in out.stderr


def test_two_handlers_are_refused():
    out = run("consumer", "--python", "workload.handlers.builtin:noop", "--", "cat")
    assert out.returncode == 2 and "choose one handler" in out.stderr


def test_bad_python_handler_is_a_usage_error():
    out = run("consumer", "--python", "nosuchmodule_qw:f")
    assert out.returncode == 2 and "cannot import 'nosuchmodule_qw'" in out.stderr


def test_out_of_range_batch_is_refused_with_the_range():
    out = run("consumer", "--batch", "50", "--python", "workload.handlers.builtin:noop")
    assert out.returncode == 2 and "--batch: '50' is not allowed: an integer from 1 to 20" in out.stderr


def test_trailing_command_is_the_exec_handler():
    a = cli.build_parser().parse_args(["consumer", "--batch", "5", "--", "/bin/prog", "-x", "arg"])
    h = cli.make_consumer_handler(a)
    assert h.kind == "exec" and h.argv == ["/bin/prog", "-x", "arg"] and a.batch == 5


def test_queue_options_for_each_backend():
    p = cli.build_parser()
    a = p.parse_args(["status", "--zaqar-url", "http://127.0.0.1:1", "--project", "p"])
    assert settings.queue_options(a) == {"url": "http://127.0.0.1:1", "project": "p"}
    a = p.parse_args(["status", "-b", "sqs", "--sqs-endpoint", "http://127.0.0.1:2", "-r", "us-east-1"])
    assert settings.queue_options(a) == {"endpoint_url": "http://127.0.0.1:2", "region": "us-east-1"}


def test_without_a_handler_the_consumer_sleeps_like_the_seed():
    p = cli.build_parser()
    assert cli.make_consumer_handler(p.parse_args(["consumer", "-t", "0.5"])).describe() == "sleep 0.5s"
    assert (
        cli.make_consumer_handler(p.parse_args(["consumer"])).describe()
        == "python workload.handlers.builtin:sleep"
    )


UNREACHABLE = {
    "OS_AUTH_URL": "http://127.0.0.1:9/v3",
    "OS_USERNAME": "u",
    "OS_PASSWORD": "p",
    "OS_PROJECT_NAME": "p",
    "OS_USER_DOMAIN_NAME": "Default",
    "OS_PROJECT_DOMAIN_NAME": "Default",
}


@pytest.mark.parametrize(
    "argv, words",
    [
        (
            ["consumer", "--claim-ttl", "30"],
            "--claim-ttl=30 is not allowed: from 60 to 43200 (the zaqar backend's limit)",
        ),
        (["consumer", "--grace", "10"], "--grace=10 is not allowed: from 60 to 43200"),
        (
            ["consumer", "-b", "sqs", "--batch", "15"],
            "--batch=15 is not allowed: from 1 to 10 (the sqs backend's limit)",
        ),
        (["consumer", "-w", "0"], "--concurrency: '0' is not allowed: an integer from 1 to 1000"),
        (["producer", "--invalid-share", "2"], "--invalid-share: '2' is not allowed: a number from 0 to 1"),
        (
            ["monitor", "--actuator", "heat", "--boot-time", "-1"],
            "--boot-time: '-1' is not allowed: a number from 0 to 3600",
        ),
        (
            ["monitor", "--actuator", "heat", "-j", "5", "-n", "5"],
            "scale_down_threshold=5 is not allowed: less than",
        ),
    ],
)
def test_bad_options_are_refused_before_any_network_call(argv, words):
    # The cloud (Keystone) and the Zaqar endpoint are unreachable: a check that came after
    # connecting would fail with exit 3 (or hang retrying) instead of naming the option.
    out = run(*argv, "--stack", "s", env=UNREACHABLE) if "monitor" in argv else run(*argv, env=UNREACHABLE)
    assert out.returncode == 2, out.stderr
    assert words in out.stderr


def test_sqs_without_credentials_is_refused_by_name_not_with_a_traceback(tmp_path):
    # botocore finds no credentials before it sends anything: the CLI says so and exits 3 (the
    # service refused), as for credentials the service itself refuses.
    nowhere = str(tmp_path / "none")
    out = run(
        *("consumer", "-b", "sqs", "--sqs-endpoint", "http://127.0.0.1:9", "-r", "us-east-1"),
        *("--idle-exit", "1"),
        env={
            "AWS_SHARED_CREDENTIALS_FILE": nowhere,
            "AWS_CONFIG_FILE": nowhere,
            "AWS_EC2_METADATA_DISABLED": "true",
        },
        unset=("AWS_",),
    )
    assert out.returncode == 3, out.stderr
    assert "no AWS credentials found" in out.stderr and "Traceback" not in out.stderr

"""Which consumer variables a stack's consumerEnv may set, read from the consumer's own parser.

The consumer's options are declared once (workload/cli.py, workload/settings.py); each names its
variables in its ``--help`` (``[env $QW_...]``). Every option is either the stack's (set from the
stack's own settings or a stack key: consumerEnv naming any of its variables is refused) or left to
consumerEnv (it then reaches the consumer's env file). A new handler option is the stack's by
being declared: no list here or in infra names them.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra import config as C
from infra import hot
from infra.render import stack_config, stack_names

BASE = {"cloud": "mycloud", "region": "RegionOne", "flavor": "m1.small", "network": "private"}
REPO = Path(__file__).resolve().parents[2]


def _consumer() -> argparse.ArgumentParser:
    from workload.cli import build_parser

    modes = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return modes.choices["consumer"]


def _variables(action: argparse.Action) -> list[str]:
    """The variables an option's --help says it reads."""
    m = re.search(r"\[env (.*)\]$", action.help or "")
    return [name.strip().lstrip("$") for name in m.group(1).split(" or ")] if m else []


OPTIONS = [(a.option_strings[-1], _variables(a)) for a in _consumer()._actions if _variables(a)]


@pytest.mark.parametrize("flag,names", OPTIONS, ids=[f for f, _ in OPTIONS])
def test_every_consumer_option_is_the_stacks_or_left_to_consumer_env(flag, names):
    reserved = [n for n in names if n in C.RESERVED_ENV]
    if reserved:
        assert reserved == names, f"{flag}: every name of a reserved option is reserved ({names})"
        for name in names:
            if not name.startswith("QW_"):
                continue  # consumerEnv takes QW_* names only
            with pytest.raises(C.ConfigError) as e:
                C.load({**BASE, "consumerEnv": f'{{"{name}": "1"}}'})
            assert e.value.key == "consumerEnv" and name in str(e.value)
    else:
        name = names[0]
        if not name.startswith("QW_"):  # OS_CLOUD: the servers' credential file is the stack's
            with pytest.raises(C.ConfigError) as e:
                C.load({**BASE, "consumerEnv": f'{{"{name}": "1"}}'})
            assert e.value.key == "consumerEnv" and "QW_" in str(e.value)
            return
        cfg = C.load({**BASE, "consumerEnv": f'{{"{name}": "1"}}'})
        assert hot.consumer_env(cfg)[name] == "1", flag


def test_each_handler_option_is_a_kind_of_the_handler_setting():
    (group,) = _consumer()._mutually_exclusive_groups  # --exec | --python | --http
    flags = {a.option_strings[-1][2:]: _variables(a)[0] for a in group._group_actions}
    assert flags == C.HANDLER_ENV and len(flags) >= 3
    for kind, name in flags.items():
        assert name in C.RESERVED_ENV and kind + ":" in C.SETTINGS["handler"].allowed()
        cfg = C.load({**BASE, "handler": f"{kind}:x"})
        env = hot.consumer_env(cfg)
        assert env[name] == "x" and not {n for n in flags.values() if n != name} & set(env)


def test_an_alias_of_a_reserved_variable_is_refused_too():
    with pytest.raises(C.ConfigError) as e:
        C.load({**BASE, "consumerEnv": '{"QW_BACKEND": "sqs"}'})  # QW_QUEUE_BACKEND's other name
    assert e.value.key == "consumerEnv" and "QW_BACKEND" in str(e.value)


AMQP = {
    "queueBackend": "amqp",
    "amqpUrl": "amqps://u:p@broker.example:5671/",
    "amqpManagementUrl": "https://broker.example:15671/",
    "amqpConsumerUser": "worker",
    "amqpConsumerPassword": "pw",
    "maxClaims": 3,
}


@pytest.mark.parametrize("name", [*stack_names(), "amqp-existing-with-users"])
def test_every_variable_the_stack_writes_is_reserved(name):
    """consumerEnv cannot override what the stack writes for the consumer itself."""
    if name in stack_names():
        cfg = stack_config(name)
    else:
        cfg = C.load({**BASE, **AMQP}, secret_keys=["amqpUrl", "amqpConsumerPassword"])
    written = set(hot.consumer_env(cfg)) | set(hot.amqp_secret_env(cfg, "consumer"))
    assert len(written) > 8
    assert written - set(cfg.consumer_env) <= set(C.RESERVED_ENV), name


def test_a_qw_variable_in_the_deployers_shell_does_not_break_the_program():
    env = {**os.environ, "QW_CLAIM_TTL": "abc", "QW_EXEC": "x"}
    code = "import infra.config as C; print(sorted(C.HANDLER_ENV))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['exec', 'http', 'python']"

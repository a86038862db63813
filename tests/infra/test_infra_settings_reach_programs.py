"""Every consumer and monitor option a stack can set reaches the process's parsed arguments.

Generated from the declarations (workload/settings.py): each example stack is rendered under
Pulumi's mocks with a value other than the default for every such setting; the env files the
servers' cloud-init would write are read back from the rendered user data and parsed by the
workload's own parser, as the container would see them; every option must hold the stack's value.
No list of settings is kept here: a new option with a stack key is tested by being declared.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
import yaml
from infra_testlib import _look

from infra import config as C
from infra import hot
from infra.render import flatten, render, stack_file, stack_names


def _other_value(s: C.Setting) -> Any:
    """A valid value of a workload option's stack setting that is not its default."""
    opt, default = s.option, s.default
    if opt.kind is bool:
        return not default
    if opt.choices:
        return next(c for c in opt.choices if c != default)
    lo = opt.lo if opt.lo is not None else 0
    hi = opt.hi if opt.hi is not None else lo + 1000
    if opt.kind is int:
        value = (default if default is not None else lo) + 1
        return value if value <= hi else default - 1
    start = default if default is not None else lo + 1
    candidates = [start * 1.25 + 0.5, (lo + hi) / 2, (lo + start) / 2]
    return next(round(v, 3) for v in candidates if v <= hi and round(v, 3) != default)


def _secrets(name: str) -> list[str]:
    """The keys stack ``name`` stores encrypted (their values read as placeholders offline)."""
    _, secrets = flatten(yaml.safe_load(stack_file(name).read_text()))
    return [k.split(":", 1)[1] for k in secrets]


def _every_option_set(name: str) -> dict[str, Any]:
    flat, _ = flatten(yaml.safe_load(stack_file(name).read_text()))
    raw = {k.split(":", 1)[1]: v for k, v in flat.items()}
    for s in C.SCHEMA:
        if s.option is not None:
            raw[s.key] = _other_value(s)
    raw["monitorEnabled"] = True
    # keep the rules that join settings satisfied, with every value still not its default
    raw["minSize"], raw["maxSize"], raw["desiredSize"] = 2, 11, 2
    raw["scaleUpStep"], raw["rollingBatchSize"] = 1, 1
    return raw


def _env(user_data: str) -> dict[str, str]:
    doc = yaml.safe_load(user_data.split("\n", 1)[1])
    return dict(
        line.split("=", 1)
        for line in doc["write_files"][0]["content"].splitlines()
        if line and not line.startswith("#")
    )


def _parse(mode: str, env: dict[str, str], monkeypatch):
    from workload import cli

    for key in [k for k in os.environ if k.startswith(("QW_", "OS_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cli.build_parser().parse_args([mode])


@pytest.mark.parametrize("policy", ["target", "threshold"])
@pytest.mark.parametrize("name", stack_names())
def test_every_workload_option_of_a_stack_reaches_the_process(name, policy, monkeypatch):
    raw = _every_option_set(name)
    raw["scalingPolicy"] = policy
    cfg = C.load(raw, _secrets(name))
    r = render(name, cfg_override=raw, secret_keys=_secrets(name), inspect=_look)
    member = r.template["resources"][hot.GROUP]["properties"]["resource"]["properties"]
    envs = {
        "consumer": _env(member["user_data"]["str_replace"]["template"]),
        "monitor": _env(r.inspected["monitor_user_data"]),
    }
    args = {mode: _parse(mode, env, monkeypatch) for mode, env in envs.items()}
    checked = 0
    for s in C.SCHEMA:
        for program, opt in s.feeds:
            if program not in args:  # the queue pair's policy: test_infra_program checks the QueuePair
                continue
            want = getattr(cfg, re_snake(s.key))
            assert getattr(args[program], opt.name) == want, (s.key, program, opt.long_flag)
            checked += 1
    assert checked >= len([s for s in C.SCHEMA if any(p in args for p, _ in s.feeds)])
    # and the monitor builds the policy the stack asked for, with the stack's values
    from workload.autoscale.monitor import policy_from_args

    p = policy_from_args(args["monitor"])
    assert p.name == policy
    for f in dataclasses.fields(p.config):
        key = next(
            (s.key for s in C.SCHEMA for prog, o in s.feeds if prog == "monitor" and o.name == f.name), None
        )
        if key:
            assert getattr(p.config, f.name) == getattr(cfg, re_snake(key)), key


def re_snake(key: str) -> str:
    import re

    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def test_every_setting_was_given_a_value_other_than_its_default():
    for name in stack_names():
        cfg = C.load(_every_option_set(name), _secrets(name))
        for s in C.SCHEMA:
            if s.option is not None:
                assert getattr(cfg, re_snake(s.key)) != s.default, s.key

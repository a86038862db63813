"""The README's workload and monitor sections name only options and variables the CLI has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workload import cli
from workload.queues.amqp_address import CREDENTIAL_ENV

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def _section(name: str) -> str:
    text = README.split(f"<!-- section:{name} -->", 1)[1].split("<!-- section:", 1)[0]
    return text.split("### `python -m bench.autoscale`", 1)[0]  # the benchmark's own options


def _parser_names() -> tuple[set[str], set[str]]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "mode")
    flags, envs = set(), set()
    for p in sub.choices.values():
        for action in p._actions:
            flags.update(action.option_strings)
            envs.update(re.findall(r"\$([A-Z][A-Z0-9_]+)", action.help or ""))
    return flags, envs


@pytest.mark.parametrize("section", ["workload", "monitor"])
def test_every_option_and_variable_the_readme_names_exists(section):
    flags, envs = _parser_names()
    text = _section(section)
    blocks = re.findall(r"```\n(.*?)```", text, re.S)
    prose = re.sub(r"```\n.*?```", "", text, flags=re.S)
    code = " ".join(blocks + re.findall(r"`([^`]+)`", prose))
    named_flags = set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", code))
    assert len(named_flags) > 20  # the sections do name options
    assert named_flags - flags == set()
    handler_env = {"QW_MESSAGE_ID", "QW_CLAIM_ID", "QW_CLAIM_COUNT"}  # what the exec handler is given
    assert set(re.findall(r"\bQW_[A-Z0-9_]+", text)) - envs - handler_env - set(CREDENTIAL_ENV) == set()

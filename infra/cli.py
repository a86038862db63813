"""`python -m infra`: look at a stack without a cloud.

python -m infra render --stack iad      # HOT template on stdout, resources on stderr
python -m infra render --stack iad --env monitor   # the monitor's settings env file
python -m infra stacks                  # the example stacks there are
python -m infra settings                # every config key with its type, default and range
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infra import config as config_mod


def build_parser() -> argparse.ArgumentParser:
    """The commands: render, stacks, settings."""
    parser = argparse.ArgumentParser(
        prog="python -m infra",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _render_parser(sub)
    st = sub.add_parser("stacks", help="list the stacks that have a Pulumi.<NAME>.yaml")
    st.add_argument(
        "--project-dir", type=Path, default=None, help="folder holding Pulumi.yaml (default: this project's)"
    )
    se = sub.add_parser(
        "settings", help="list every config key: type, default, description and what is allowed"
    )
    se.add_argument("--markdown", action="store_true", help="as the Markdown table the README holds")
    return parser


def _render_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "render",
        help="run the program for a stack under Pulumi's mocks (no cloud) and print "
        "the HOT template (stdout) and the resources it would declare (stderr)",
    )
    r.add_argument(
        "--stack",
        "-s",
        required=True,
        help="stack name: Pulumi.<NAME>.yaml next to Pulumi.yaml supplies its config",
    )
    r.add_argument(
        "--project-dir",
        type=Path,
        default=None,
        help="folder holding Pulumi.yaml and the Pulumi.<NAME>.yaml files (default: this project's)",
    )
    r.add_argument(
        "--member",
        action="store_true",
        help="print the group's member as a template of its own instead (what the validator checks)",
    )
    r.add_argument(
        "--env",
        choices=("consumer", "monitor"),
        help="print the settings env file cloud-init writes for the consumer or the monitor instead "
        "(the credential is appended on the server and not shown)",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from infra import render

    if args.command == "stacks":
        print("\n".join(render.stack_names(args.project_dir)))
        return 0
    if args.command == "settings":
        print(config_mod.document(markdown=args.markdown))
        return 0
    return _render(args)


def _render(args: argparse.Namespace) -> int:
    """``render``: the template (or the member, or an env file) on stdout, the resources on stderr."""
    from infra import hot, render

    try:
        result = render.render(args.stack, root=args.project_dir)
    except render.UnknownStack as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except config_mod.ConfigError as exc:
        print(f"error: stack {args.stack}: {exc}", file=sys.stderr)
        return 2
    if args.env:
        from infra.components.monitor import monitor_env

        cfg = render.stack_config(args.stack, root=args.project_dir)
        env = (
            hot.consumer_env(cfg)
            if args.env == "consumer"
            else monitor_env(cfg, hot.group_stack_name(args.stack))
        )
        sys.stdout.write(hot.env_file(env, hot.amqp_comments(cfg)))
    elif args.member:
        sys.stdout.write(hot.dump(hot.member_template(result.template)))
    else:
        sys.stdout.write(result.template_text)
    for line in result.resource_lines():
        print(line, file=sys.stderr)
    return 0

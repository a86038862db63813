"""fab tasks for the consumer template: bake-template, prune-templates (steps live in images/)."""

from __future__ import annotations

import inspect
import json
import sys

from invoke import Exit, task

from images import bake as bake_mod
from images import prune as prune_mod


def bake_template(c, **given):
    """Bake the consumer template image: builder server, Docker, workload image, unit, snapshot.

    Needs OpenStack credentials the usual way (clouds.yaml with --cloud / $OS_CLOUD, or OS_*
    variables) allowing: key pairs, servers (create, console output, stop, createImage, delete),
    images (list, show, update, delete), security groups and rules, floating IPs. Everything the
    bake creates besides the template image is deleted at the end, also on failure and Ctrl-C.
    Unchanged content (template files, bake steps, workload image) reuses the existing template
    unless --force. Prints each step with its time; writes a manifest JSON.
    """
    try:
        opts = bake_mod.BakeOptions.from_cli(given)
    except ValueError as e:  # a bad option: refused before anything is asked of the cloud
        raise Exit(f"bake-template: {e}", code=2) from None
    try:
        result = bake_mod.bake(opts)
    except (bake_mod.BakeError, ValueError) as e:
        raise Exit(f"bake-template: {e}", code=1) from e
    except KeyboardInterrupt:
        raise Exit(
            "bake-template: interrupted; everything the bake created was cleaned up (see above)", code=130
        ) from None
    print(
        json.dumps(
            {
                "template_image_id": result["template_image_id"],
                "template_name": result["template_name"],
                "reused": result["reused"],
            }
        )
    )


# The task's options, their defaults and their --help lines are BakeOptions' fields (declared once).
_CLI = bake_mod.BakeOptions.cli_fields()
# inspect.signature() reads __signature__ from any callable; typeshed declares it on no function type.
bake_template.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [
        inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.metadata["cli_default"])
        for f in _CLI
    ]
)
bake_template = task(
    auto_shortflags=False,
    help={f.name.replace("_", "-"): f.metadata["help"] for f in _CLI},
    iterable=[f.name for f in _CLI if f.metadata["repeatable"]],
)(bake_template)


@task(
    auto_shortflags=False,
    help={
        "keep": "how many of the newest complete templates to keep (at least 1; default 3)",
        "cloud": "cloud name in clouds.yaml (default: $OS_CLOUD, or the OS_* environment)",
        "region": "region (default: the cloud's region_name)",
        "name": "template name to prune (default: the template's, queue-workers-consumer)",
        "dry-run": "only print what would be deleted",
    },
)
def prune_templates(c, keep=3, cloud=None, region=None, name=None, dry_run=False):
    """Delete old template images, keeping the newest N and any a server or a Heat stack uses.

    Needs credentials (as for bake-template) allowed to list servers, list and delete images, and,
    where the cloud has Heat, list stacks and show each one and its template: a stack it cannot
    read stops the prune with nothing deleted. Prints which server or stack keeps an image, then
    a JSON line of what was kept, deleted and found in use.
    """
    conn = bake_mod.connect(bake_mod.BakeOptions(cloud=cloud, region=region))
    try:
        result = prune_mod.prune(conn, int(keep), name=name, dry_run=dry_run)
    except bake_mod.BakeError as e:
        raise Exit(f"prune-templates: {e}", code=1) from e
    print(json.dumps(result), file=sys.stdout)

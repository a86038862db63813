"""Run the program for one stack offline, under Pulumi's mocks, and collect what it declares."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import yaml

from infra.config import PROJECT

ROOT = Path(__file__).resolve().parent.parent  # where Pulumi.yaml and Pulumi.<stack>.yaml live
SECRET_PLACEHOLDER = "<secret>"


class UnknownStack(LookupError):
    """No Pulumi.<name>.yaml: names the stacks that exist."""


def stack_names(root: Path | None = None) -> list[str]:
    root = root or ROOT
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def stack_file(name: str, root: Path | None = None) -> Path:
    root = root or ROOT
    path = root / f"Pulumi.{name}.yaml"
    if not path.is_file():
        have = ", ".join(stack_names(root)) or "none"
        raise UnknownStack(f"no stack {name!r} (no Pulumi.{name}.yaml next to Pulumi.yaml); stacks: {have}")
    return path


def _flat(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def flatten(doc: dict, project: str = PROJECT) -> tuple[dict[str, str], list[str]]:
    """A stack file's config as the engine hands it to the program: ``{"project:key": "text"}``.

    Encrypted values (``{secure: ...}``) cannot be read offline: they become a placeholder and
    their key is marked secret, as the engine would mark it.
    """
    config, secrets = {}, []
    for key, value in (doc.get("config") or {}).items():
        full = key if ":" in key else f"{project}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            secrets.append(full)
            value = SECRET_PLACEHOLDER
        elif isinstance(value, dict) and any(
            isinstance(v, dict) and set(v) == {"secure"} for v in value.values()
        ):
            value = {k: SECRET_PLACEHOLDER if isinstance(v, dict) else v for k, v in value.items()}
            secrets.append(full)
        config[full] = _flat(value)
    return config, secrets


def stack_settings(name: str, root: Path | None = None, **changes: Any) -> tuple[dict, list[str]]:
    """A stack file's settings (keys without the project prefix) with ``changes``, as
    :func:`render`'s ``cfg_override`` takes them, and the keys stored as secrets (read as the
    offline placeholder, for ``secret_keys``)."""
    config, secrets = flatten(yaml.safe_load(stack_file(name, root).read_text()) or {})
    plain = {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith(f"{PROJECT}:")}
    return {**plain, **changes}, [key.split(":", 1)[1] for key in secrets if key.startswith(f"{PROJECT}:")]


@dataclasses.dataclass
class Rendered:
    stack: str
    template: dict
    template_text: str
    resources: list  # infra.mocks.Recorded
    calls: list
    outputs: dict
    inspected: Any = None

    def resource_lines(self) -> list[str]:
        lines = [f"stack {self.stack}: {len(self.resources)} resources"]
        for r in self.resources:
            parent = r.parent_types[-1] if r.parent_types else "-"
            kind = "component" if not r.custom else "resource"
            lines.append(f"  {r.type:62} {r.name:32} {kind:9} parent={parent}")
        return lines


def stack_config(name: str, root: Path | None = None):
    """The validated config of stack ``name`` from its Pulumi.<name>.yaml (no Pulumi runtime)."""
    from infra.config import load

    config, secrets = flatten(yaml.safe_load(stack_file(name, root).read_text()) or {})
    prefix = f"{PROJECT}:"
    return load(
        {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)},
        [k[len(prefix) :] for k in secrets if k.startswith(prefix)],
    )


def render(
    name: str,
    images: list[dict] | None = None,
    root: Path | None = None,
    cfg_override: dict | None = None,
    secret_keys: list[str] | None = None,
    inspect: Any = None,
    setup: Any = None,
    flavors: dict[str, dict] | None = None,
) -> Rendered:
    """Run the program for stack ``name`` under mocks; return the template and what was declared.

    ``images`` stands for the cloud's template images (default: one that matches), ``flavors`` for
    its flavors (default: any name is a flavor big enough, :data:`infra.mocks.MOCK_FLAVOR`); ``cfg_override``
    replaces the stack file's config; ``inspect(stack)`` runs inside the program (it may be a
    coroutine function, awaited there) and its result is kept in ``Rendered.inspected``;
    ``setup()`` runs inside the program before anything is declared (e.g. to register a
    stack transformation that sees every resource's options).
    """
    import pulumi
    from pulumi.runtime import config as rc

    from infra.mocks import RecordingMonitor, StackMocks

    config, secrets = _engine_config(name, root, cfg_override, secret_keys)
    os.environ.pop("PULUMI_CONFIG", None)  # only the stack file speaks
    mocks = StackMocks(images=images, stack=name, flavors=flavors)
    pulumi.runtime.set_mocks(
        mocks, project=PROJECT, stack=name, preview=False, monitor=RecordingMonitor(mocks)
    )
    rc.set_all_config(config, secrets)
    holder: dict = {}
    _program(holder, inspect, setup)()
    stack = holder["stack"]
    return Rendered(
        name,
        yaml.safe_load(stack.group.template),
        stack.group.template,
        mocks.resources,
        mocks.calls,
        holder.get("outputs", {}),
        holder.get("inspected"),
    )


def _engine_config(
    name: str, root: Path | None, cfg_override: dict | None, secret_keys: list[str] | None
) -> tuple[dict[str, str], list[str]]:
    """The config the engine hands the program: the stack file's, or ``cfg_override`` instead."""
    config, secrets = flatten(yaml.safe_load(stack_file(name, root).read_text()) or {})
    if cfg_override is not None:
        return (
            {f"{PROJECT}:{k}": _flat(v) for k, v in cfg_override.items()},
            [f"{PROJECT}:{k}" for k in secret_keys or ()],
        )
    return config, secrets


def _program(holder: dict, inspect: Any, setup: Any) -> Any:
    """The program as a Pulumi mock test: declares the stack, keeps it and its outputs in ``holder``."""
    import pulumi
    from pulumi.runtime import mocks as pm

    @pm.test
    def run():
        from infra.program import declare

        if setup is not None:
            setup()
        holder["stack"] = stack = declare()
        outs = {"scale_up_url": stack.group.scale_up_url, "queue": stack.queue.name}
        done = pulumi.Output.all(**outs).apply(lambda v: holder.__setitem__("outputs", v))
        if inspect is None:
            return done

        async def look():
            await done.future()
            got = inspect(stack)
            holder["inspected"] = await got if asyncio.iscoroutine(got) else got

        return pulumi.Output.from_input(asyncio.ensure_future(look()))

    return run

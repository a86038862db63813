"""`pulumi up` and `pulumi destroy` of one stack against the local cloud, as close as this machine allows.

**A test harness, not a deployer.** The Pulumi CLI and its OpenStack plugin cannot be installed
here (see the README's local-deploy section), so nothing of Pulumi's engine runs: no state, no
diff, no refresh, no update, no replacement, no parallelism limit, no policy pack. What does run is
the program itself (``infra/``, ``infra.program.declare``) for ``Pulumi.<stack>.yaml``, under
Pulumi's own mocks (``pulumi.runtime.set_mocks``), where the mocks create each declared resource in
the local cloud with the exact inputs the program computed (:mod:`devenv.local_resources`), and hand
the real ids and outputs back to the program, so a resource that needs another's id or secret gets
the real one. The SDK registers a resource only once its inputs (and ``depends_on``) are resolved,
so resources are created in dependency order, independent ones in parallel as the engine would.
:meth:`LocalDeployment.destroy` deletes them in the reverse of the order they were made (every
resource after all it depends on), as ``pulumi destroy`` would. A type it does not know fails by
name; if ``up`` fails half way, what was made is deleted before the error is raised.

    with LocalDeployment(stack="local", cloud=cloud) as d:    # up on enter, destroy on exit
        d.outputs["heat_stack"], d.resources, d.find("openstack:compute/instance:Instance")
    d.destroy()                                              # idempotent

``cloud`` is anything with ``clouds_yaml`` (a path) and optionally ``progress``: the running
:class:`devenv.controlplane.ControlPlane`. A control plane without Nova, Neutron or Glance can
still take the rest with ``stand_ins=True``: resources of a missing service are then *not made*
(printed and recorded as ``stand-in``), the Heat stack gets servers mapped to ``OS::Heat::None``
and the template image is the bake's properties without an image. Without ``stand_ins`` a missing
service is an error naming it.

``python -m devenv.pulumi_local up|destroy --stack local`` does the same for a person against a
running ``python -m devenv.controlplane`` (its clouds.yaml), printing each resource as it is
created or deleted; ``up`` keeps what it made in a state file that ``destroy`` reads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devenv import local_resources as lr

STATE_FILE = "pulumi-local-{stack}.json"  # next to the cloud's clouds.yaml: what `up` made, for `destroy`


class ServiceMissing(RuntimeError):
    """The program declares a resource whose service the local cloud's catalog lacks."""


@dataclasses.dataclass
class Resource:
    """One resource the program declared and the harness made (or, with stand-ins, did not)."""

    type: str
    name: str
    urn: str
    custom: bool
    inputs: dict  # what the program computed (wire names; secrets unwrapped)
    id: str = ""
    outputs: dict = dataclasses.field(default_factory=dict)
    dependencies: list = dataclasses.field(default_factory=list)  # URNs it waited for
    parent: str = ""
    stand_in: bool = False  # not made: its service is not in this cloud
    deleted: bool = False

    @property
    def made(self) -> bool:
        """True if something of it exists in the cloud (destroy must delete it)."""
        return (
            bool(self.id)
            and self.custom
            and not self.stand_in
            and lr.kind_of(self.type, True) is not lr.PROVIDER
        )


def _plain(value: Any) -> Any:
    from infra.mocks import _plain as unwrap  # the engine's secret wrapper, as the mocks unwrap it

    return unwrap(value)


class _Cloud:
    """The local cloud as the resource kinds see it: openstacksdk, REST adapters, the catalog."""

    def __init__(self, clouds_yaml: Path, name: str, region: str, stand_ins: bool):
        import openstack
        from keystoneauth1 import adapter
        from openstack import config as os_config

        self.clouds_yaml, self.name, self.region, self.stand_ins = Path(clouds_yaml), name, region, stand_ins
        region_cfg = os_config.OpenStackConfig(config_files=[str(clouds_yaml)]).get_one(
            cloud=name, region_name=region
        )
        self.auth_url = region_cfg.config["auth"]["auth_url"]
        self.conn = openstack.connection.Connection(config=region_cfg)
        session = self.conn.session
        self.user_id = session.get_user_id()
        self.identity = adapter.Adapter(session, service_type="identity", interface="public")
        self.orchestration = adapter.Adapter(
            session, service_type="orchestration", interface="public", region_name=region
        )
        catalog = session.auth.get_access(session).service_catalog
        self.services = {s["type"] for s in catalog.catalog if s.get("endpoints")}
        self._current = threading.local()

    def has(self, service: str | None) -> bool:
        return service is None or bool(set(lr.SERVICE_TYPES.get(service, (service,))) & self.services)

    def stand_in(self, service: str) -> bool:
        """True when ``service`` is missing and the caller allowed stand-ins for it."""
        return not self.has(service) and self.stand_ins

    def check_provider(self, cloud: str | None, region: str | None) -> None:
        if cloud != self.name or (region and region != self.region):
            raise lr.CreateFailed(
                f"the program's provider wants cloud {cloud!r} region {region!r}, but this "
                f"harness deploys to {self.name!r} region {self.region!r}: set the stack's "
                f"cloud and region to those"
            )

    def remember(self, id_: str, outputs: dict) -> None:
        """Called by a kind as soon as the cloud holds the resource, before waiting for it: if the
        wait fails, destroy still deletes it."""
        rec: Resource = self._current.resource
        rec.id, rec.outputs = id_, {**rec.inputs, **outputs}


class _HarnessMocks:
    """Pulumi mocks whose ``new_resource`` creates the resource in the local cloud."""

    def __init__(self, deployment: LocalDeployment):
        self.d = deployment

    def new_resource(self, args) -> tuple[str, dict]:
        with self.d._busy:
            if self.d._failed:  # the program already failed: make nothing more (it would be left)
                raise lr.CreateFailed(f"not making {args.typ} {args.name!r}: the program failed")
            self.d._in_flight += 1
        try:
            return self._new_resource(args)
        finally:
            with self.d._busy:
                self.d._in_flight -= 1
                self.d._busy.notify_all()

    def _new_resource(self, args) -> tuple[str, dict]:
        d = self.d
        urn, deps, parent = d._pending.pop((args.typ, args.name))
        inputs = {k: _plain(v) for k, v in dict(args.inputs).items()}
        rec = Resource(args.typ, args.name, urn, bool(args.custom), inputs, dependencies=deps, parent=parent)
        kind = lr.kind_of(args.typ, rec.custom)  # unknown type: fails here, by name
        d._require(f"{args.typ} {args.name!r}", kind.service)
        if not d.cloud.has(kind.service):
            rec.stand_in, rec.id = True, f"stand-in-{args.name}"
            rec.outputs = {**inputs, "name": inputs.get("name") or args.name}
            d._record(rec, "~", f"NOT MADE: no {kind.service} service in this cloud")
            return rec.id, rec.outputs
        d.cloud._current.resource = rec
        started = time.monotonic()
        try:
            rec.id, outs = kind.create(d.cloud, inputs)
        except BaseException as exc:
            if rec.id:  # the cloud holds it although creating it failed: destroy deletes it
                d._record(rec, "!", f"failed after it was made: {exc}")
            raise lr.CreateFailed(f"creating {args.typ} {args.name!r}: {exc}") from exc
        rec.outputs = outs
        d._record(rec, "+", f"{kind.describe(outs)} ({time.monotonic() - started:.1f} s)")
        return rec.id, outs

    def call(self, args) -> dict:
        want = {k: _plain(v) for k, v in dict(args.args).items()}
        if args.token == "openstack:images/getImage:getImage":
            return self._get_image(args.token, want)
        if args.token == "openstack:compute/getFlavor:getFlavor":
            return self._get_flavor(args.token, want)
        if args.token == "openstack:networking/getNetwork:getNetwork":
            return self._get_network(args.token, want)
        raise lr.UnknownResourceType(f"invoke {args.token}")

    def _get_image(self, token: str, want: dict) -> dict:
        self.d._require(token, lr.IMAGE)
        if self.d.cloud.stand_in(lr.IMAGE):
            from infra.mocks import baked_image  # no Glance: the bake's properties, no image

            props = dict(want.get("properties") or {})
            image = baked_image(props.pop("qw_template_name", "queue-workers-consumer"), **props)
            self.d._say(f"  ~ getImage: no image service in this cloud: stand-in {image['name']}")
            return {**image, "region": want.get("region")}
        return self._lookup("getImage", lr.get_image, want)

    def _get_flavor(self, token: str, want: dict) -> dict:
        self.d._require(token, lr.COMPUTE)
        if self.d.cloud.stand_in(lr.COMPUTE):  # no Nova: a flavor that fits any image
            self.d._say(f"  ~ getFlavor: no compute service in this cloud: stand-in {want.get('name')}")
            return {"name": want.get("name"), "disk": 0, "ram": 0, "vcpus": 1, "region": want.get("region")}
        return self._lookup("getFlavor", lr.get_flavor, want)

    def _get_network(self, token: str, want: dict) -> dict:
        self.d._require(token, lr.NETWORK)
        if self.d.cloud.stand_in(lr.NETWORK):  # no Neutron: the network's name stands for its id
            self.d._say(f"  ~ getNetwork: no network service in this cloud: stand-in {want.get('name')}")
            return {
                "id": f"stand-in-{want.get('name')}",
                "name": want.get("name"),
                "region": want.get("region"),
            }
        return self._lookup("getNetwork", lr.get_network, want)

    def _lookup(self, what: str, lookup, want: dict) -> dict:
        try:
            found = lookup(self.d.cloud, want)
        except LookupError as exc:  # a failed invoke, as the provider reports it
            return {}, [("name", str(exc))]  # type: ignore[return-value]
        self.d._say(f"  = {what} {found['name']} ({found['id']})")
        return found


def _monitor_class():
    from pulumi.runtime import mocks as pm

    class HarnessMonitor(pm.MockMonitor):
        """The mock monitor, also handing each registration's URN, parent and dependencies over."""

        def __init__(self, mocks: _HarnessMocks):
            super().__init__(mocks)
            self.d = mocks.d

        def RegisterResource(self, request):
            if request.type != "pulumi:pulumi:Stack":
                urn = self.make_urn(request.parent, request.type, request.name)
                deps = sorted(
                    set(request.dependencies)
                    | {u for p in request.propertyDependencies.values() for u in p.urns}
                )
                self.d._pending[(request.type, request.name)] = (urn, deps, request.parent)
            return super().RegisterResource(request)

    return HarnessMonitor


class LocalDeployment:
    """Run the Pulumi program for ``stack`` with its resources made in the local cloud. A test harness.

    ``cloud``: the running local cloud (``clouds_yaml``). ``config``: settings that replace the
    stack file's (e.g. a unique ``queueName`` per test); ``identityEndpoint`` is always the running
    Keystone's. ``stand_ins``: allow services the catalog lacks (see the module docstring).
    ``progress``: where the resource lines go (default print). ``program``: what runs instead of
    ``infra.program.declare`` (tests of the harness itself).
    """

    def __init__(
        self,
        stack: str = "local",
        cloud: Any = None,
        *,
        clouds_yaml: str | os.PathLike | None = None,
        config: dict | None = None,
        stand_ins: bool = False,
        progress: Callable[[str], None] | None = None,
        root: Path | None = None,
        program: Callable[[], Any] | None = None,
    ):
        if cloud is None and clouds_yaml is None:
            raise ValueError("give the local cloud (cloud=ControlPlane) or its clouds_yaml")
        self.stack = stack
        self.clouds_yaml = Path(clouds_yaml or cloud.clouds_yaml)
        self.overrides = dict(config or {})
        self.stand_ins = stand_ins
        self.progress = progress or print
        self.root = root
        self.program = program
        self.resources: list[Resource] = []
        self.outputs: dict[str, Any] = {}
        self.secret_outputs: set[str] = set()
        self.cloud: _Cloud | None = None
        self._pending: dict = {}
        self._lock = threading.Lock()
        # resources being made right now (in the SDK's executor threads): a failed program can
        # raise while some are still in flight; destroy waits for them, or they would be left
        self._busy = threading.Condition()
        self._in_flight = 0
        self._failed = False
        self.timings: dict[str, float] = {}

    # --- what tests read ---------------------------------------------------------------------
    def find(self, typ: str, name: str | None = None) -> list[Resource]:
        """The resources of type ``typ`` (and ``name``), in the order they were made."""
        return [r for r in self.resources if r.type == typ and (name is None or r.name == name)]

    def one(self, typ: str, name: str | None = None) -> Resource:
        found = self.find(typ, name)
        if len(found) != 1:
            raise LookupError(
                f"{len(found)} resources of type {typ!r}" + (f" named {name!r}" if name else "")
            )
        return found[0]

    # --- up / destroy --------------------------------------------------------------------------
    def config(self) -> tuple[dict[str, str], list[str]]:
        """The stack file's config as the engine hands it over, with the overrides and the local
        Keystone's URL as identityEndpoint (the servers' credential files name it)."""
        import yaml

        from infra.config import PROJECT
        from infra.render import _flat, flatten, stack_file

        doc = yaml.safe_load(stack_file(self.stack, self.root).read_text()) or {}
        config, secrets = flatten(doc)
        if any(v == "<secret>" for v in config.values()) or secrets:
            raise ValueError(
                f"Pulumi.{self.stack}.yaml holds encrypted values ({secrets}); the harness cannot "
                f"decrypt them: pass them in config= instead"
            )
        merged = {**config, **{f"{PROJECT}:{k}": _flat(v) for k, v in self.overrides.items()}}
        merged[f"{PROJECT}:identityEndpoint"] = self.cloud.auth_url
        return merged, []

    def up(self) -> LocalDeployment:
        """Run the program; every resource it declares is made in the local cloud. On failure, what
        was made is deleted (reverse order) and the error raised."""
        started = time.monotonic()
        self._refuse_a_second_up()
        self._say(
            f"local deployment of stack {self.stack!r} (test harness: the program under Pulumi's "
            f"mocks, resources made in the local cloud)"
        )
        with _client_config(self.clouds_yaml):
            self._install_mocks()
            try:
                exported = self._run_program()
            except BaseException as exc:
                self._undo_failed_up(exc)
                raise
        self.outputs = {k: _plain(v) for k, v in exported.items()}
        self.timings["up_s"] = round(time.monotonic() - started, 1)
        made = sum(1 for r in self.resources if r.made)
        self._say(
            f"up: {made} resources made in {self.timings['up_s']} s; outputs: "
            + ", ".join(sorted(self.outputs))
        )
        return self

    def _refuse_a_second_up(self) -> None:
        """No state, no update: a second up would lose the first's resources."""
        if self.state_path().is_file():
            raise FileExistsError(
                f"stack {self.stack!r} is already deployed on this cloud "
                f"({self.state_path().name} beside its clouds.yaml): destroy it first"
            )

    def _install_mocks(self) -> None:
        """The stack file's config (with the overrides) set as Pulumi's, and the harness's mocks
        installed as Pulumi's resource monitor, the way the CLI would start the program."""
        import pulumi
        import yaml
        from pulumi.runtime import config as rc

        from infra.config import PROJECT
        from infra.render import stack_file

        doc = yaml.safe_load(stack_file(self.stack, self.root).read_text()) or {}
        cfg = {**(doc.get("config") or {}), **{f"{PROJECT}:{k}": v for k, v in self.overrides.items()}}
        self.cloud = _Cloud(
            self.clouds_yaml,
            str(cfg.get(f"{PROJECT}:cloud")),
            str(cfg.get(f"{PROJECT}:region")),
            self.stand_ins,
        )
        config, secrets = self.config()
        os.environ.pop("PULUMI_CONFIG", None)
        mocks = _HarnessMocks(self)
        pulumi.runtime.set_mocks(
            mocks, project=PROJECT, stack=self.stack, preview=False, monitor=_monitor_class()(mocks)
        )
        rc.set_all_config(config, secrets)

    def _run_program(self) -> dict:
        """The program (``infra.program.declare`` unless another was given) run to its end; its
        stack outputs resolved, the secret ones remembered as such."""
        import pulumi
        from pulumi.runtime import mocks as pm

        holder: dict = {}

        @pm.test
        def run():
            from pulumi.runtime.settings import get_root_resource

            from infra.program import declare

            (self.program or declare)()
            exported = dict(get_root_resource().outputs)

            async def collect():
                for key, out in exported.items():
                    out = pulumi.Output.from_input(out)
                    holder[key] = await out.future()
                    if await out.is_secret():
                        self.secret_outputs.add(key)

            return pulumi.Output.from_input(asyncio.ensure_future(collect()))

        run()
        return holder

    def _undo_failed_up(self, exc: BaseException) -> None:
        """After a failed up: let the registrations in flight finish (making nothing more), then
        delete what was made. A failing clean-up is raised with both errors named."""
        self._say(f"up failed: {exc}; deleting what was made")
        with self._busy:
            self._failed = True  # registrations still queued in the SDK's threads make nothing
            if not self._busy.wait_for(lambda: self._in_flight == 0, timeout=900):
                self._say(f"  ! {self._in_flight} resources still being made after 900 s")
        try:
            self.destroy()
        except Exception as cleanup:
            raise RuntimeError(f"up failed ({exc}) and cleaning up failed too: {cleanup}") from exc

    def destroy(self) -> None:
        """Delete every resource made, newest first (each after everything that depends on it)."""
        started = time.monotonic()
        errors = []
        with _client_config(self.clouds_yaml):
            for rec in reversed(self.resources):
                if not rec.made or rec.deleted:
                    continue
                began = time.monotonic()
                try:
                    lr.kind_of(rec.type, True).delete(self.cloud, rec.id, rec.outputs)
                except Exception as exc:
                    errors.append(f"{rec.type} {rec.name!r} ({rec.id}): {exc}")
                    self._say(f"  ! {rec.type:62} {rec.name:32} delete failed: {exc}")
                    continue
                rec.deleted = True
                with self._lock:
                    self._save_state()
                self._say(f"  - {rec.type:62} {rec.name:32} {rec.id} ({time.monotonic() - began:.1f} s)")
        self.timings["destroy_s"] = round(time.monotonic() - started, 1)
        if errors:
            raise RuntimeError("destroy left resources behind: " + "; ".join(errors))
        self._say(f"destroy: done in {self.timings['destroy_s']} s")
        with self._lock:
            self._save_state()

    def __enter__(self) -> LocalDeployment:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # --- internals ------------------------------------------------------------------------------
    def _record(self, rec: Resource, mark: str, detail: str) -> None:
        with self._lock:
            self.resources.append(rec)
            self._save_state()  # at once: an `up` killed half way can still be destroyed
        if rec.custom:
            self._say(f"  {mark} {rec.type:62} {rec.name:32} {rec.id} {detail}".rstrip())

    def _require(self, what: str, service: str | None) -> None:
        """Refuse ``what`` if its service is missing and stand-ins are not allowed."""
        if not self.cloud.has(service) and not self.cloud.stand_ins:
            raise ServiceMissing(
                f"{what} needs the {service!r} service, which this cloud's catalog does not "
                f"have (it has {', '.join(sorted(self.cloud.services))}); allow stand-ins "
                f"(--stand-ins) to leave such resources out"
            )

    def _say(self, line: str) -> None:
        self.progress(line)

    def state_path(self) -> Path:
        """Beside the cloud's clouds.yaml: it belongs to that running cloud and goes with it."""
        return self.clouds_yaml.parent / STATE_FILE.format(stack=self.stack)

    def _save_state(self) -> None:
        """What is made, for `python -m devenv.pulumi_local destroy` in another process (0600:
        the credentials' secrets are in it, as they are in Pulumi's state)."""
        left = [dataclasses.asdict(r) for r in self.resources if r.made and not r.deleted]
        path = self.state_path()
        if not left:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(
            json.dumps(
                {
                    "stack": self.stack,
                    "clouds_yaml": str(self.clouds_yaml),
                    "cloud": self.cloud.name,
                    "region": self.cloud.region,
                    "resources": left,
                },
                indent=1,
                default=str,
            )
        )

    @classmethod
    def from_state(cls, stack: str, clouds_yaml: str | os.PathLike, progress=None) -> LocalDeployment:
        """The deployment an earlier ``up`` on the cloud of ``clouds_yaml`` left (to destroy it)."""
        d = cls(stack, clouds_yaml=clouds_yaml, progress=progress)
        path = d.state_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"no local deployment of stack {stack!r} on this cloud to destroy "
                f"({path.name} missing beside its clouds.yaml)"
            )
        state = json.loads(path.read_text())
        with _client_config(d.clouds_yaml):
            d.cloud = _Cloud(d.clouds_yaml, state["cloud"], state["region"], stand_ins=True)
        d.resources = [Resource(**r) for r in state["resources"]]
        return d


@contextlib.contextmanager
def _client_config(clouds_yaml: Path):
    """OS_CLIENT_CONFIG_FILE set to the local cloud's clouds.yaml while the program runs: the
    program's auth-URL lookup and the queue provider read clouds.yaml the way a user's would."""
    old = os.environ.get("OS_CLIENT_CONFIG_FILE")
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(clouds_yaml)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OS_CLIENT_CONFIG_FILE", None)
        else:
            os.environ["OS_CLIENT_CONFIG_FILE"] = old


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devenv.pulumi_local",
        description="A test harness, not a deployer: run the Pulumi program for a stack under Pulumi's "
        "mocks, with every resource it declares made in (or deleted from) the local cloud, printing each.",
    )
    parser.add_argument(
        "action",
        choices=["up", "destroy"],
        help="up: make every resource the program declares; destroy: delete what up made",
    )
    parser.add_argument("--stack", default="local", help="the stack (Pulumi.<stack>.yaml; default local)")
    parser.add_argument(
        "--clouds-yaml",
        default=os.environ.get("OS_CLIENT_CONFIG_FILE"),
        help="clouds.yaml of the running local cloud (default: $OS_CLIENT_CONFIG_FILE, which "
        "`python -m devenv.controlplane` prints)",
    )
    parser.add_argument(
        "--stand-ins",
        action="store_true",
        help="on a control plane without Nova/Neutron/Glance, do not make their resources "
        "(printed as NOT MADE) and map servers to OS::Heat::None",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replace one setting of the stack file (repeatable), e.g. --set queueName=jobs2",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m devenv.pulumi_local up|destroy --stack local``."""
    args = build_parser().parse_args(argv)
    if not args.clouds_yaml:
        print(
            "no clouds.yaml: start `python -m devenv.controlplane` and export what it prints, or "
            "pass --clouds-yaml",
            file=sys.stderr,
        )
        return 2
    try:
        if args.action == "destroy":
            LocalDeployment.from_state(args.stack, args.clouds_yaml).destroy()
            return 0
        overrides = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                print(f"--set {item!r}: expected KEY=VALUE", file=sys.stderr)
                return 2
            overrides[key] = value
        d = LocalDeployment(
            args.stack, clouds_yaml=args.clouds_yaml, config=overrides, stand_ins=args.stand_ins
        )
        d.up()
        for key in sorted(d.outputs):
            shown = "<secret>" if key in d.secret_outputs else d.outputs[key]
            print(f"{key}: {shown}")
        print(f"`python -m devenv.pulumi_local destroy --stack {args.stack}` deletes it.")
        return 0
    except Exception as exc:  # a clear line for a person at the terminal
        print(f"pulumi_local {args.action}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

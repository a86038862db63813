"""``python -m devenv cloud-demo``: the whole loop on the local cloud, for a person to watch.

The local cloud (``ControlPlane(cloud=True, messaging=True)``), the consumer template baked by
:class:`images.bake.Bake`, the local stack deployed by :class:`devenv.pulumi_local.LocalDeployment`,
a backlog posted to the stack's queue; then a live view (queue depth, group members and their
states, messages handled) while the stack's own monitor grows the group, the consumers drain the
queue and the monitor shrinks the group back; then destroy. ``tests/cloud/test_whole_loop.py``
runs the same pieces and asserts on them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from devenv.procs import json_records

#: Messages posted, seconds of work each, and the group's bounds (the whole-loop test's too).
MESSAGES, WORK_S, MIN_SIZE, MAX_SIZE = 60, 1.0, 0, 3


class Phases:
    """Wall time of each phase, printed as it ends and once more at the end."""

    def __init__(self, out=print):
        self.out, self.t, self.done = out, time.monotonic(), []

    def end(self, name: str) -> None:
        now = time.monotonic()
        self.done.append((name, now - self.t))
        self.out(f"phase {name}: {now - self.t:.0f} s")
        self.t = now

    def report(self) -> str:
        return ", ".join(f"{n} {s:.0f} s" for n, s in self.done)


def wait_for(what: str, fn, timeout: float, poll: float = 2.0, on_poll=None):
    """``fn()``'s first true value, calling ``on_poll()`` before each look; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if on_poll:
            on_poll()
        value = fn()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def make_key(directory: Path) -> tuple[str, str]:
    """A fresh ed25519 key pair in ``directory``: (private key path, public key line)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qw-loop", "-f", str(directory / "id")],
        check=True,
    )
    return str(directory / "id"), (directory / "id.pub").read_text().strip()


def shared_extra_images() -> tuple[Path, ...]:
    """The container archives every cloud test's template carries besides the workload image: the
    broker server's RabbitMQ image (built offline once, :mod:`devenv.builder.rabbitmq_image`), so
    that the consumer stacks and the ``amqpBroker: server`` stack boot one template, baked once a
    cloud session (the archive adds about 4 s to the bake)."""
    from devenv.builder import rabbitmq_image

    return (rabbitmq_image.archive(),)


def bake_template(cp, out_dir: Path, out=None, extra_images: tuple[Path, ...] | None = None) -> dict:
    """Bake the consumer template on the local cloud with the bake itself (``extra_images``: more
    container archives loaded into it, ``--extra-image``; default :func:`shared_extra_images`);
    returns its manifest. The bake reuses a template of the same content, so every caller with the
    default shares one bake.

    Baked on ``m1.tiny``: Nova records the builder flavor's disk as the snapshot's min_disk, and
    Pulumi.local.yaml boots the monitor on m1.tiny (1 GB), which a bake on m1.small (10 GB) refuses.
    """
    from devenv.builder import image
    from devenv.cloud import PROVIDER_NETWORK
    from images.bake import Bake, BakeOptions

    opts = BakeOptions(
        connection=cp.connection("local"),
        network=PROVIDER_NETWORK,
        flavor="m1.tiny",
        image_archive=image.current(),
        extra_image=shared_extra_images() if extra_images is None else extra_images,
        manifest=out_dir / "manifest.json",
        timeout=900,
    )
    return Bake(opts, out=out).run()


def open_stack_queue(cp, name: str):
    """The stack's queue as the demo user sees it, through Keystone (the cloud's clouds.yaml)."""
    from workload.queues import open_queue

    # clouds.yaml is found through the environment: set it only while the driver reads it, so the
    # rest of the process (other tests of a session) keeps its own.
    saved = {k: os.environ.get(k) for k in cp.env()}
    os.environ.update(cp.env())
    try:
        return open_queue("zaqar", name, cloud="local")  # reads clouds.yaml now, in its constructor
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def loop_config(queue_name: str, key_pair: str) -> dict:
    """The overrides of Pulumi.local.yaml for a loop of minutes: bounds, thresholds, short cooldowns,
    and SSH (a key pair and an ingress rule) so the consumers' logs can be read."""
    return {
        "queueName": queue_name,
        "minSize": MIN_SIZE,
        "maxSize": MAX_SIZE,
        "keyPair": key_pair,
        "sshCidrs": ["0.0.0.0/0"],
        "scaleUpThreshold": 5,
        "scaleDownThreshold": 0,
        "scaleUpCooldown": 10,
        "scaleDownCooldown": 10,
        "monitorInterval": 3,
    }


#: The consumer's log events MemberLogs keeps: each message handled, each drain seen or called off.
LOGGED = ("message", "drain", "drain-called-off")


class MemberLogs:
    """The consumers' ``message`` and drain log lines (:data:`LOGGED`), read over SSH (``docker
    logs``) from each live member."""

    def __init__(self, conn, key_path: str, monitor_id: str, out=print):
        self.conn, self.key_path, self.monitor_id, self.out = conn, key_path, monitor_id, out
        self.lines: dict[str, list[dict]] = {}
        self.seen: set[str] = set()
        self.max_members = 0

    def members(self) -> list:
        """The group's servers now (the monitor's server excluded)."""
        return [
            s
            for s in self.conn.compute.servers()
            if s.id != self.monitor_id and (s.metadata or {}).get("qw_role") == "consumer"
        ]

    def run(self, s, command: str) -> str | None:
        """``command``'s output (as root) on member ``s`` over SSH; None while it cannot be reached
        (not ACTIVE, no host keys on its console yet, gone, or SSH refused)."""
        from openstack.exceptions import NotFoundException

        from images.ssh import host_keys_from_console, pinned_connection

        if s.status != "ACTIVE":
            return None
        try:
            console = self.conn.compute.get_server_console_output(s.id).get("output", "")
        except NotFoundException:  # deleted by a scale-down since the listing
            return None
        if "-----END SSH HOST KEY KEYS-----" not in console:
            return None
        address = next(iter(s.addresses.values()))[0]["addr"]
        try:
            with pinned_connection(
                address, 22, "debian", self.key_path, host_keys_from_console(console)
            ) as c:
                return c.sudo(command, warn=True, hide=True).stdout
        except Exception as exc:
            self.out(f"  (no answer from {s.name}: {exc})")
            return None

    def poll(self) -> list:
        """Read every live member's log once (a member being deleted keeps its last read)."""
        live = self.members()
        self.max_members = max(self.max_members, len(live))
        for s in live:
            self.seen.add(s.id)
            text = self.run(s, "docker logs queue-workers-consumer 2>&1")
            if text is None:
                continue
            recs = [r for r in json_records(text) if r.get("event") in LOGGED]
            if len(recs) >= len(self.lines.get(s.id, [])):
                self.lines[s.id] = recs
        return live

    def done_ids(self) -> list[str]:
        """Ids of the messages the consumers finished (duplicates kept)."""
        return [r["message_id"] for recs in self.lines.values() for r in recs if r.get("outcome") == "done"]


@dataclasses.dataclass
class Deployed:
    """The local stack deployed from the baked template, with what its tests and the demo use."""

    deployment: object  # devenv.pulumi_local.LocalDeployment
    conn: object  # openstack.connection.Connection, as the project's user
    key_path: str  # private key of the stack's key pair (SSH to the members)
    queue_name: str
    template: dict  # the bake's manifest
    phases: Phases


@contextlib.contextmanager
def deployed(
    cp, work_dir: Path, config: Callable[[str, str], dict], prefix: str, out=print
) -> Iterator[Deployed]:
    """Bake (or reuse) the template, make a key pair, deploy the local stack with
    ``config(queue_name, key_pair)``; on the way out destroy it and delete the key pair."""
    from devenv.pulumi_local import LocalDeployment

    phases = Phases(out)
    template = bake_template(cp, work_dir)
    phases.end(f"bake ({'reused' if template.get('reused') else 'baked'} {template['template_name']})")
    conn = cp.connection("local")
    key = make_key(work_dir)
    key_name, queue_name = f"qw-{prefix}-{uuid.uuid4().hex[:6]}", f"{prefix}-{uuid.uuid4().hex[:8]}"
    conn.compute.create_keypair(name=key_name, public_key=key[1])
    d = LocalDeployment("local", cp, config=config(queue_name, key_name))
    try:
        d.up()
        yield Deployed(d, conn, key[0], queue_name, template, phases)
    finally:
        try:
            d.destroy()
        finally:
            conn.compute.delete_keypair(key_name, ignore_missing=True)
        phases.end("destroy")
        out(f"phases: {phases.report()}")


def run_loop(cp, work_dir: Path, out=print) -> dict:
    """Bake, deploy, post, watch the group grow, drain and shrink, destroy; returns what happened:
    ``posted`` ids, ``done`` ids, ``max_members``, ``members_after``, ``phases``, ``template``."""
    with deployed(cp, work_dir, loop_config, "loop", out) as dep:
        phases, queue_name, d = dep.phases, dep.queue_name, dep.deployment
        result = {"template": dep.template, "phases": phases}
        phases.end("deploy")
        result["template_image_id"] = d.outputs["template_image_id"]
        logs = MemberLogs(dep.conn, dep.key_path, d.outputs["monitor_server"], out)
        result["members_before"] = len(logs.members())
        queue = open_stack_queue(cp, queue_name)
        result["posted"] = queue.post([{"seq": i, "work_s": WORK_S} for i in range(MESSAGES)])
        phases.end(f"post {MESSAGES} messages")

        def view():
            live = logs.poll()
            stats = queue.stats()
            out(
                f"  queue free {stats.free:3d} claimed {stats.claimed:3d} | members "
                f"{' '.join(s.status for s in live) or '-':30s} | handled {len(set(logs.done_ids()))}"
            )

        wait_for("the monitor to grow the group", lambda: logs.max_members > MIN_SIZE, 600, 3, view)
        phases.end("scale up (first member)")
        wait_for("the consumers to drain the queue", lambda: queue.stats().total == 0, 1200, 3, view)
        logs.poll()
        phases.end(f"drain ({len(logs.seen)} members seen, at most {logs.max_members} at once)")
        wait_for(
            "the monitor to shrink the group back", lambda: len(logs.members()) == MIN_SIZE, 900, 3, view
        )
        phases.end("scale down")
        result.update(
            done=logs.done_ids(),
            max_members=logs.max_members,
            members_after=len(logs.members()),
            dead_letters=open_stack_queue(cp, f"{queue_name}-dlq").stats().total,
        )
        done = result["done"]
        out(
            f"produced {MESSAGES}, handled {len(done)} ({len(set(done))} distinct, {len(done) - len(set(done))} "
            f"duplicates) by {len(logs.lines)} members; dead letters: {result['dead_letters']}"
        )
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devenv cloud-demo", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--run-dir", help="keep the local cloud's configs and logs here (default: a temporary directory)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Start the local cloud, run the loop with its live view, stop the cloud."""
    from devenv.controlplane import ControlPlane

    args = build_parser().parse_args(argv)
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    with (
        tempfile.TemporaryDirectory(prefix="qw-cloud-demo-") as work,
        ControlPlane(run_dir=args.run_dir, cloud=True, messaging=True, progress=say) as cp,
    ):
        r = run_loop(cp, Path(work), say)
    ok = set(r["done"]) == set(r["posted"]) and r["max_members"] > MIN_SIZE and r["members_after"] == MIN_SIZE
    say(
        "the whole loop ran: every message handled, the group grew and came back"
        if ok
        else "the loop did not complete: see above"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

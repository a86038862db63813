"""The whole loop on the local cloud, nothing stood in: the consumer template baked by
:class:`images.bake.Bake` (a builder server booted from debian-12, the Fabric steps over SSH, a
Nova snapshot), the local stack deployed by :class:`devenv.pulumi_local.LocalDeployment`, a backlog
posted to the stack's queue in the Zaqar behind Keystone, the stack's own monitor server scaling
the Heat group up, the consumers in the booted servers (real cloud-init, unit and container, their
own credential) draining it, the monitor scaling back down, and destroy leaving the project as it
was (the template image stays).

Messages handled are counted from the consumers' own logs (``docker logs`` over SSH, read while
each member lives): N produced, N distinct handled, duplicates counted and printed.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cloud_harness"))
from harness_testlib import Project, project_resources  # noqa: E402

pytestmark = pytest.mark.cloud

N = 60
WORK_S = 1.0
MIN, MAX = 0, 3


class Phases:
    """Wall time of each phase, printed as it ends and once more at the end."""

    def __init__(self):
        self.t, self.done = time.monotonic(), []

    def end(self, name: str) -> None:
        now = time.monotonic()
        self.done.append((name, now - self.t))
        print(f"\nphase {name}: {now - self.t:.0f} s", flush=True)
        self.t = now

    def report(self) -> str:
        return ", ".join(f"{n} {s:.0f} s" for n, s in self.done)


def _wait(what, fn, timeout, poll=2.0, on_poll=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if on_poll:
            on_poll()
        value = fn()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    d = tmp_path_factory.mktemp("loop-key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qw-loop", "-f", str(d / "id")], check=True)
    return str(d / "id"), (d / "id.pub").read_text().strip()


@pytest.fixture(scope="module")
def template(cloud, tmp_path_factory):
    """The consumer template, baked on the local cloud by the bake itself (kept, as a bake's is)."""
    from devenv.builder import image
    from devenv.cloud import PROVIDER_NETWORK
    from images.bake import Bake, BakeOptions

    if not image.DEFAULT_OUTPUT.exists():
        image.build()
    out = tmp_path_factory.mktemp("bake")
    opts = BakeOptions(connection=cloud.connection("local"), network=PROVIDER_NETWORK,
                       image_archive=image.DEFAULT_OUTPUT, manifest=out / "manifest.json", timeout=900)
    t0 = time.monotonic()
    manifest = Bake(opts).run()
    print(f"\nbake: {time.monotonic() - t0:.0f} s ({'reused' if manifest.get('reused') else 'baked'} "
          f"{manifest['template_name']})", flush=True)
    return manifest


class MemberLogs:
    """The consumers' ``message`` log lines, read over SSH from each live member of the group."""

    def __init__(self, conn, key_path, monitor_id):
        self.conn, self.key_path, self.monitor_id = conn, key_path, monitor_id
        self.lines: dict[str, list[dict]] = {}
        self.seen_members: set[str] = set()
        self.max_members = 0

    def members(self):
        return [s for s in self.conn.compute.servers() if s.id != self.monitor_id
                and (s.metadata or {}).get("qw_role") == "consumer"]

    def poll(self) -> None:
        from images.ssh import host_keys_from_console, pinned_connection

        live = self.members()
        self.max_members = max(self.max_members, len(live))
        for s in live:
            self.seen_members.add(s.id)
            if s.status != "ACTIVE":
                continue
            console = self.conn.compute.get_server_console_output(s.id).get("output", "")
            if "-----END SSH HOST KEY KEYS-----" not in console:
                continue
            address = next(iter(s.addresses.values()))[0]["addr"]
            try:
                with pinned_connection(address, 22, "debian", self.key_path, host_keys_from_console(console)) as c:
                    out = c.sudo("docker logs queue-workers-consumer 2>&1", warn=True, hide=True).stdout
            except Exception as exc:  # a member being deleted; its last read stays
                print(f"  (no logs from {s.name}: {exc})", flush=True)
                continue
            recs = []
            for line in out.splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("event") == "message":
                    recs.append(rec)
            if len(recs) >= len(self.lines.get(s.id, [])):
                self.lines[s.id] = recs

    def done_ids(self) -> list[str]:
        return [r["message_id"] for recs in self.lines.values() for r in recs if r.get("outcome") == "done"]


def test_the_whole_loop(cloud, template, key):
    from devenv.pulumi_local import LocalDeployment

    conn = cloud.connection("local")
    project = Project(cloud.session("local"))
    before = project_resources(project)
    phases = Phases()
    keyname = f"qw-loop-{uuid.uuid4().hex[:6]}"
    conn.compute.create_keypair(name=keyname, public_key=key[1])
    qname = f"loop-{uuid.uuid4().hex[:8]}"
    config = {"queueName": qname, "minSize": MIN, "maxSize": MAX, "keyPair": keyname, "sshCidrs": ["0.0.0.0/0"],
              "scaleUpThreshold": 5, "scaleDownThreshold": 0, "scaleUpCooldown": 10, "scaleDownCooldown": 10,
              "monitorInterval": 3}
    d = LocalDeployment("local", cloud, config=config)
    try:
        d.up()
        phases.end("deploy")
        assert d.outputs["template_image_id"] == template["template_image_id"]
        logs = MemberLogs(conn, key[0], d.outputs["monitor_server"])
        assert len(logs.members()) == MIN

        queue = _queue(cloud, qname)
        ids = queue.post([{"seq": i, "work_s": WORK_S} for i in range(N)])
        assert len(set(ids)) == N
        phases.end("post")

        _wait("the monitor to grow the group", lambda: logs.max_members > MIN, 600, on_poll=logs.poll)
        phases.end("scale up (first member)")
        _wait("the consumers to drain the queue", lambda: queue.stats().total == 0, 1200, poll=3, on_poll=logs.poll)
        logs.poll()
        phases.end(f"drain (members seen: {len(logs.seen_members)}, at most {logs.max_members} at once)")
        _wait("the monitor to shrink the group back", lambda: len(logs.members()) == MIN, 900, poll=3)
        phases.end("scale down")

        done = logs.done_ids()
        dups = len(done) - len(set(done))
        print(f"\nproduced {N}, handled {len(done)} ({len(set(done))} distinct, {dups} duplicates) by "
              f"{len(logs.lines)} members; dead letters: {_queue(cloud, qname + '-dlq').stats().total}", flush=True)
        assert logs.max_members > MIN
        assert set(done) == set(ids), f"not handled: {sorted(set(ids) - set(done))[:10]}"
    finally:
        try:
            d.destroy()
        finally:
            conn.compute.delete_keypair(keyname, ignore_missing=True)
        phases.end("destroy")
        print(f"\nphases: {phases.report()}", flush=True)
    after = project_resources(project)
    assert after == before, {k: (after[k] - before[k], before[k] - after[k]) for k in after if after[k] != before[k]}


def _queue(cloud, name):
    """The stack's queue as the test's user sees it, through Keystone (clouds.yaml's demo user)."""
    import os

    from workload.queues import open_queue

    os.environ.update(cloud.env())
    return open_queue("zaqar", name, cloud="local")

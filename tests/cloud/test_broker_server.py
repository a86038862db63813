"""``amqpBroker: server`` on the local cloud, nothing stood in: the broker server boots, the
stack's monitor scales the group on the broker's counts and the consumers handle the stack's queue
on it over AMQPS.

The template is the cloud tests' shared bake (:func:`devenv.cloud_demo.bake_template`), which
loads the RabbitMQ image built offline from Debian's package (``devenv.builder.rabbitmq_image``)
as an ``--extra-image`` (no registry is reachable here); the stack pins it by content hash.
``Pulumi.local.yaml`` is deployed by :class:`devenv.pulumi_local.LocalDeployment` with
``queueBackend: amqp``, ``amqpBroker: server`` and ``amqpBrokerVolumeSize: 0`` (the local cloud
has no Cinder): the security groups and their rules, the Neutron port, the certificate for the
port's address, the users' passwords, the broker server on that port with its real cloud-init
user data, the consumers' Heat group (1 member, at most 2) and the monitor's server. Then a
backlog is posted to the broker as the stack's user over AMQPS from this machine; the monitor's
decision log (its ``docker logs``, over SSH) shows it read the broker's ready and unacknowledged
counts as ``qw-monitor`` and grew the group to 2; both members handle messages and every one is
handled (their own ``docker logs``); the broker lists their connections as ``qw-consumer`` over
TLS; and destroy leaves the project as it was (the template stays, as a bake's does).
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cloud_harness"))
from harness_testlib import Project, project_resources

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(1400)]

#: the backlog (messages, seconds of work each): a minute of work for the one member
#: (consumerConcurrency 2), so the monitor sees it and the second member joins before it is drained
MESSAGES, WORK_S, MIN_SIZE, MAX_SIZE = 40, 3.0, 1, 2
INSTANCE = "openstack:compute/instance:Instance"


def test_broker_server_boots_and_the_consumers_use_it_over_amqps(cloud, tmp_path):
    from devenv.builder import rabbitmq_image
    from devenv.cloud_demo import MemberLogs, Phases, bake_template, make_key, wait_for
    from devenv.pulumi_local import LocalDeployment
    from images.properties import P_EXTRA, P_HASH
    from infra import broker as B
    from workload.queues import open_queue

    say = lambda msg: print(msg, flush=True)  # noqa: E731
    phases = Phases(say)
    project = Project(cloud.session("local"))
    before = project_resources(project)

    # the cloud tests' shared template, which carries the broker's RabbitMQ image (reused if a test
    # of this session baked it already)
    template = bake_template(cloud, tmp_path, out=sys.stdout)
    assert rabbitmq_image.DEFAULT_TAG in template["properties"][P_EXTRA]
    phases.end(f"bake ({'reused' if template['reused'] else 'baked'} {template['template_name']})")

    conn = cloud.connection("local")
    key_path, public = make_key(tmp_path)
    key_name, queue_name = f"qw-broker-{uuid.uuid4().hex[:6]}", f"broker-{uuid.uuid4().hex[:8]}"
    conn.compute.create_keypair(name=key_name, public_key=public)
    config = {
        "queueName": queue_name,
        "queueBackend": "amqp",
        "amqpBroker": "server",
        "amqpBrokerVolumeSize": 0,
        "amqpBrokerImage": rabbitmq_image.DEFAULT_TAG,
        "amqpBrokerFlavor": "m1.tiny",
        "monitorEnabled": True,
        "minSize": MIN_SIZE,
        "maxSize": MAX_SIZE,
        "scaleUpThreshold": 5,
        "scaleUpCooldown": 10,
        "scaleDownCooldown": 600,  # no scale-in within the test: it proves the way up
        "monitorInterval": 3,
        "keyPair": key_name,
        "sshCidrs": ["0.0.0.0/0"],
        # exactly this bake's template (another test's bake without the broker image may be newer)
        "templateImageProperties": {P_HASH: template["properties"][P_HASH]},
    }
    d = LocalDeployment("local", cloud, config=config, progress=say)
    queue = None
    try:
        d.up()
        phases.end("deploy")
        assert not d.find("openstack:blockstorage/volume:Volume")
        port = d.one("openstack:networking/port:Port")
        broker = d.one(INSTANCE, "broker-server")
        assert broker.inputs["networks"] == [{"port": port.id}] and not broker.inputs.get("blockDevices")
        host = d.outputs["broker_address"]
        assert host in port.outputs["allFixedIps"]
        passwords = next(r for r in d.resources if r.name == "broker-passwords").outputs["passwords"]

        # As the stack's user, from this machine, over AMQPS verified against the stack's CA.
        ca_file = tmp_path / "broker-ca.pem"
        ca_file.write_text(d.outputs["broker_ca_pem"])
        wait_for(
            "the broker server to serve the queue pair (RabbitMQ started, its `ensure` unit done)",
            lambda: _declared(host, passwords[B.STACK_USER], ca_file, queue_name),
            600,
            5,
        )
        url = B.amqps_url(B.STACK_USER, passwords[B.STACK_USER], host, d.outputs["broker_ca_pem"])
        queue = open_queue("amqp", queue_name, url=url)
        phases.end("broker serves the queue")
        posted = queue.post([{"seq": i, "work_s": WORK_S} for i in range(MESSAGES)])
        phases.end(f"post {MESSAGES} messages")

        monitor_id = d.outputs["monitor_server"]
        logs = MemberLogs(conn, key_path, monitor_id=monitor_id, out=say)
        decisions: list[dict] = []
        shown: set[str] = set()

        def view():
            logs.poll()
            decisions[:] = _decisions(logs, conn.compute.get_server(monitor_id), shown) or decisions
            last = decisions[-1] if decisions else {}
            say(
                f"  queue ready {_ready(queue)} | members {len(logs.members())} | handled "
                f"{len(set(logs.done_ids()))} of {MESSAGES} | monitor looks {len(decisions)}, last: "
                f"{(last.get('decision') or {}).get('reason')!r} error {last.get('error')!r}"
            )

        wait_for("the monitor to grow the group to 2", lambda: logs.max_members == MAX_SIZE, 600, 5, view)
        phases.end("scale up (second member)")
        wait_for(
            "the consumers to handle every message", lambda: set(posted) <= set(logs.done_ids()), 900, 5, view
        )
        phases.end(f"handled ({len(logs.lines)} members' logs)")
        decisions[:] = _decisions(logs, conn.compute.get_server(monitor_id)) or decisions

        # The monitor read the broker's counts (as qw-monitor: ready by a passive declare,
        # unacknowledged from the management API over HTTPS) and grew the group on them.
        seen = [r for r in decisions if r.get("observation", {}).get("stats")]
        assert seen, decisions[-3:]
        assert any(r["observation"]["stats"]["free"] >= 5 for r in seen), seen[-3:]
        assert any(r["observation"]["stats"]["claimed"] > 0 for r in seen), seen[-3:]
        ups = [
            r for r in decisions if (r.get("result") or {}).get("changed") and r["decision"]["desired"] == 2
        ]
        assert ups and ups[0]["error"] is None, (ups, decisions[-3:])
        assert len(logs.seen) == MAX_SIZE and all(logs.lines.get(m) for m in logs.seen), logs.lines.keys()

        # The broker's own view: the consumers are connected as qw-consumer over TLS.
        broker_server = conn.compute.get_server(broker.id)
        listing = logs.run(
            broker_server,
            "docker exec queue-workers-broker rabbitmqctl list_connections user ssl peer_host "
            "--quiet --no-table-headers",
        )
        connections = [line.split("\t") for line in (listing or "").splitlines() if line.count("\t") == 2]
        consumers = [(ssl, peer) for user, ssl, peer in connections if user == B.CONSUMER_USER]
        member_ips = {next(iter(s.addresses.values()))[0]["addr"] for s in logs.members()}
        assert consumers and all(ssl == "true" for ssl, _ in consumers), connections
        assert {peer for _, peer in consumers} == member_ips, (connections, member_ips)
        # amqpBrokerVolumeSize 0: the broker's data is a folder of the root disk, not a mount
        mount = logs.run(broker_server, f"findmnt -n -o TARGET --target {B.DATA_DIR}; ls {B.DATA_DIR}")
        assert mount is not None and mount.splitlines()[0] == "/" and "mnesia" in mount, mount

    finally:
        if queue is not None:
            queue.close()
        try:
            d.destroy()
        finally:
            conn.compute.delete_keypair(key_name, ignore_missing=True)
        phases.end("destroy")
        say(f"phases: {phases.report()}")

    after = project_resources(project)
    baked = set() if template["reused"] else {template["template_image_id"]}
    assert after["glance images"] - before["glance images"] == baked
    after["glance images"] = before["glance images"]
    assert after == before, {
        k: (after[k] - before[k], before[k] - after[k]) for k in after if after[k] != before[k]
    }


def _declared(host: str, password: str, ca_file: Path, queue: str) -> bool:
    """True once the broker's `ensure` unit has set the queue's policy ``qw.QUEUE`` (its last step),
    asked of the management API over HTTPS as the stack's user, verified against the stack's CA."""
    import requests

    from infra import broker as B

    try:
        resp = requests.get(
            f"https://{host}:{B.MANAGEMENT_PORT}/api/policies/%2F/qw.{queue}",
            auth=(B.STACK_USER, password),
            verify=str(ca_file),
            timeout=10,
        )
    except requests.RequestException as exc:  # not up yet: the server booting, RabbitMQ starting
        print(f"  (broker not ready: {type(exc).__name__})", flush=True)
        return False
    print(f"  (broker answers: policy qw.{queue}: {resp.status_code})", flush=True)
    return resp.status_code == 200


def _decisions(logs, server, shown: set[str] | None = None) -> list[dict] | None:
    """The monitor's decision log (its ``docker logs``, one JSON line a look), over SSH; None while
    it cannot be read. Its other lines (an error, a traceback) are printed once (``shown``)."""
    text = logs.run(server, "docker logs queue-workers-monitor 2>&1")
    if text is None:
        return None
    records = []
    for line in text.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            if shown is not None and line not in shown:
                shown.add(line)
                print(f"  monitor: {line[:300]}", flush=True)
            continue
        if isinstance(r, dict) and r.get("event") == "decision":
            records.append(r)
    return records


def _ready(queue) -> str:
    try:
        return str(queue.stats().free)
    except Exception as exc:  # a view only
        return f"? ({type(exc).__name__})"

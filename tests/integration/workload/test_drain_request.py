"""A real consumer process asked to drain through its server's metadata (the drain protocol's
consumer side, workload/drain_request.py): it finishes the message it holds, gives back the
rest, exits 0 and leaves the drained file the server's unit powers off on.

The metadata API here is a small HTTP server that serves meta_data.json in Nova's documented
shape (``{"uuid", "meta": {...}}``); the real Nova metadata API serves it in tests/cloud."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading

from wl_helpers import REPO, cli_env, workload_cmd

from devenv.procs import wait_until

JOB = f"{sys.executable} -c 'import sys, time; sys.stdin.read(); time.sleep(3)'"


class _Metadata(http.server.BaseHTTPRequestHandler):
    meta: dict = {}

    def do_GET(self):
        body = json.dumps({"uuid": "u-1", "name": "member-1", "meta": dict(self.meta)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_drain_request_finishes_held_work_releases_the_rest_and_leaves_the_drained_file(
    zaqar, zaqar_queue, tmp_path
):
    q = zaqar_queue()
    q.post([{"seq": i} for i in range(4)])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/openstack/latest/meta_data.json"
    log, drained = tmp_path / "consumer.jsonl", tmp_path / "drained"
    _Metadata.meta = {}
    proc = subprocess.Popen(
        workload_cmd(
            "consumer",
            "-q",
            q.name,
            "--batch",
            "4",
            "-w",
            "1",
            "--claim-ttl",
            "600",
            "--drain-timeout",
            "30",
            "--drain-watch",
            url,
            "--drained-file",
            str(drained),
            "--log-file",
            str(log),
            "--exec",
            JOB,
        ),
        env=cli_env(zaqar),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: q.stats().claimed == 4, 30, "the consumer to claim all 4 messages")
        assert not drained.exists()  # no drain asked yet
        _Metadata.meta = {"qw_drain": "1900000000"}
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.shutdown()
    assert proc.returncode == 0, err
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    events = [e["event"] for e in lines]
    assert "drain" in events
    outcomes = [e["outcome"] for e in lines if e["event"] == "message"]
    # the message being handled when the drain came was finished, not killed or released
    assert "done" in outcomes and "timeout" not in outcomes
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["stopped_by"] == "drain"
    assert summary["done"] + summary["released"] == 4
    assert json.loads(drained.read_text())["deadline"] == 1900000000
    # nothing lost: what was not done is back in the queue for the consumers that stay
    wait_until(lambda: q.stats().free == 4 - summary["done"], 30, "the released messages to be free")


def test_without_a_drain_request_the_consumer_keeps_working_and_writes_no_drained_file(
    zaqar, zaqar_queue, tmp_path
):
    q = zaqar_queue()
    q.post([{"seq": 0}])
    drained = tmp_path / "drained"
    # an unreachable metadata API is not an error: the consumer consumes and stops on its own
    res = subprocess.run(
        workload_cmd(
            "consumer",
            "-q",
            q.name,
            "--max-messages",
            "1",
            "--drain-watch",
            "http://127.0.0.1:9/openstack/latest/meta_data.json",
            "--drained-file",
            str(drained),
            "--exec",
            "cat",
        ),
        env=cli_env(zaqar),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert not drained.exists()
    assert '"metadata API' in res.stdout  # said once, as a non-fatal error line

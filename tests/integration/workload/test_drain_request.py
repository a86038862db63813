"""A real consumer process asked to drain through its server's metadata (the drain protocol's
consumer side, workload/drain_request.py): it finishes the message it holds, gives back the
rest, exits 0 and leaves the drained file the server's unit powers off on; a drain called off
while it still works is taken back, and it claims again.

The metadata API here is a small HTTP server that serves meta_data.json in Nova's documented
shape (``{"uuid", "meta": {...}}``); the real Nova metadata API serves it in tests/cloud."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading

from wl_helpers import REPO, cli_env, start_cli, workload_cmd

from devenv.procs import wait_until

JOB = f"{sys.executable} -c 'import sys, time; sys.stdin.read(); time.sleep(3)'"
LONG_JOB = f"{sys.executable} -c 'import sys, time; sys.stdin.read(); time.sleep(15)'"


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


def metadata_api():
    """The stand-in metadata API on loopback: (server, meta_data.json URL); meta starts empty."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Metadata.meta = {}
    return server, f"http://127.0.0.1:{server.server_port}/openstack/latest/meta_data.json"


def start_watching_consumer(zaqar, url: str, tmp_path, job: str, *options: str):
    """A consumer process watching ``url`` for a drain, running ``job`` per message:
    (process, its log file, its drained file)."""
    log, drained = tmp_path / "consumer.jsonl", tmp_path / "drained"
    proc = start_cli(
        zaqar,
        "consumer",
        *options,
        "--drain-watch",
        url,
        "--drained-file",
        str(drained),
        "--log-file",
        str(log),
        "--exec",
        job,
    )
    return proc, log, drained


def events_in(log) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []


def test_a_drain_request_finishes_held_work_releases_the_rest_and_leaves_the_drained_file(
    zaqar, zaqar_queue, tmp_path
):
    q = zaqar_queue()
    q.post([{"seq": i} for i in range(4)])
    server, url = metadata_api()
    proc, log, drained = start_watching_consumer(
        zaqar,
        url,
        tmp_path,
        JOB,
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
    lines = events_in(log)
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


def test_a_drain_called_off_while_a_handler_runs_is_taken_back_and_the_consumer_claims_again(
    zaqar, zaqar_queue, tmp_path
):
    """What a scale-up that calls a drain off (the monitor deletes the key) does to a consumer
    that has seen the drain but still works: it finishes that message, claims the next one, and
    writes no drained file (its server stays on)."""
    q = zaqar_queue()
    q.post([{"seq": i} for i in range(2)])
    server, url = metadata_api()
    proc, log, drained = start_watching_consumer(
        zaqar,
        url,
        tmp_path,
        LONG_JOB,
        "-q",
        q.name,
        "--batch",
        "1",
        "--prefetch",
        "0",
        "-w",
        "1",
        "--max-messages",
        "2",
    )
    try:
        wait_until(lambda: q.stats().claimed == 1, 30, "the consumer to claim the first message")
        _Metadata.meta = {"qw_drain": "1900000000"}
        wait_until(lambda: any(e["event"] == "drain" for e in events_in(log)), 10, "the drain to be seen")
        assert q.stats().claimed == 1  # it holds the one it works on, and claims no more
        _Metadata.meta = {}
        wait_until(
            lambda: any(e["event"] == "drain-called-off" for e in events_in(log)),
            10,
            "the call-off to be seen",
        )
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.shutdown()
    assert proc.returncode == 0, err
    lines = events_in(log)
    (off,) = [e for e in lines if e["event"] == "drain-called-off"]
    assert off["taken_back"] is True
    outcomes = [e["outcome"] for e in lines if e["event"] == "message"]
    assert outcomes == ["done", "done"]  # the held one finished, then the next was claimed and done
    assert lines[-1]["event"] == "summary" and lines[-1]["stopped_by"] == "max-messages"
    assert not drained.exists()
    assert q.stats().total == 0

"""Every handler's outcomes, with real child processes and a real local HTTP server."""

from __future__ import annotations

import http.server
import json
import sys
import textwrap
import threading
import time

import pytest

from workload.handlers import DONE, REJECT, RETRY, TIMEOUT, Context, make_handler
from workload.handlers.exec import ExecHandler
from workload.handlers.http import HttpHandler
from workload.handlers.python import PythonHandler
from workload.queues.base import Message

CTX = Context(queue="jobs", claim_id="claim-1", timeout=None)


def msg(body, claim_count=2):
    return Message(id="m-1", body=body, age=1.0, claim_count=claim_count)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


# -- exec ----------------------------------------------------------------------------------------
def test_exec_exit_zero_is_done_and_stdout_is_the_reply():
    h = ExecHandler(py("import sys, json; b = json.load(sys.stdin); print(json.dumps({'got': b['n']}))"))
    r = h.handle(msg({"n": 7}), CTX)
    assert r.outcome == DONE and r.reply == {"got": 7}


def test_exec_text_body_goes_to_stdin_as_is():
    h = ExecHandler(py("import sys; sys.stdout.write(sys.stdin.read().upper())"))
    assert h.handle(msg("hello widget"), CTX).reply == "HELLO WIDGET"


def test_exec_nonzero_exit_is_retry_with_stderr_tail():
    h = ExecHandler(py("import sys; sys.stderr.write('widget maker down'); sys.exit(3)"))
    r = h.handle(msg({}), CTX)
    assert r.outcome == RETRY
    assert "exit status 3" in r.error and "widget maker down" in r.error


def test_exec_sees_message_id_claim_and_count_in_env():
    h = ExecHandler(
        py(
            "import os; print(os.environ['QW_MESSAGE_ID'], os.environ['QW_CLAIM_ID'], "
            "os.environ['QW_CLAIM_COUNT'], os.environ['QW_QUEUE'])"
        )
    )
    assert h.handle(msg({}, claim_count=4), CTX).reply == "m-1 claim-1 4 jobs"


def test_exec_timeout_kills_the_program_and_its_children(tmp_path):
    marker = tmp_path / "survived"
    late = tmp_path / "late.py"
    late.write_text(f"import time\ntime.sleep(2)\nopen({str(marker)!r}, 'w').close()\n")
    # The program starts a grandchild that would write the marker later; both must die.
    h = ExecHandler(
        py(f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, {str(late)!r}])
        time.sleep(30)
    """)
    )
    r = h.handle(msg({}), Context("jobs", "c", timeout=0.5))
    assert r.outcome == TIMEOUT and "killed" in r.error
    time.sleep(2.5)
    assert not marker.exists()


def test_exec_missing_program_is_retry_naming_it():
    r = ExecHandler(["/nonexistent/widget-maker"]).handle(msg({}), CTX)
    assert r.outcome == RETRY and "/nonexistent/widget-maker" in r.error


def test_exec_cancel_kills_running_programs():
    h = ExecHandler(py("import time; time.sleep(30)"))
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", h.handle(msg({}), CTX)))
    t.start()
    time.sleep(0.5)
    h.cancel()
    t.join(10)
    assert not t.is_alive() and out["r"].outcome == RETRY and "signal 9" in out["r"].error


def test_exec_needs_a_program():
    with pytest.raises(ValueError, match="needs a program"):
        ExecHandler("")


# -- python --------------------------------------------------------------------------------------
def test_python_return_value_is_the_reply():
    r = make_handler("python", "workload.handlers.builtin:echo").handle(msg({"a": 1}), CTX)
    assert r.outcome == DONE and r.reply == {"a": 1}


def test_python_exception_is_retry_and_reject_is_reject():
    h = PythonHandler("workload.handlers.builtin:widget")
    assert h.handle(msg({"widget_id": "31f37378-54f4-11e5-ad75-3c970e65f731"}), CTX).outcome == DONE
    r = h.handle(msg({"widget_id": "this_is_not_a_valid_widget_id"}), CTX)
    assert r.outcome == REJECT and "this_is_not_a_valid_widget_id" in r.error
    r = PythonHandler("workload.handlers.builtin:flaky_widget").handle(msg({"widget_id": "bad"}), CTX)
    assert r.outcome == RETRY and "RuntimeError" in r.error


def test_python_two_argument_function_gets_the_message(tmp_path, monkeypatch):
    (tmp_path / "qw_two_args.py").write_text("def h(body, message):\n    return [body, message.id]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert PythonHandler("qw_two_args:h").handle(msg(5), CTX).reply == [5, "m-1"]


def test_python_late_return_counts_as_timeout():
    h = PythonHandler("workload.handlers.builtin:sleep")
    r = h.handle(msg({"work_s": 0.3}), Context("jobs", "c", timeout=0.1))
    assert r.outcome == TIMEOUT


@pytest.mark.parametrize(
    "spec, words",
    [
        ("no_colon", "package.module:function"),
        ("no_such_module_qw:f", "cannot import"),
        ("workload.handlers.builtin:nope", "has no 'nope'"),
    ],
)
def test_python_bad_spec_says_what_is_wrong(spec, words):
    with pytest.raises(ValueError, match=words):
        PythonHandler(spec)


def test_unknown_kind_names_the_allowed_ones():
    with pytest.raises(ValueError, match="exec, python, http"):
        make_handler("ftp", "x")


# -- http ----------------------------------------------------------------------------------------
class _Widgets(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("sleep"):
            time.sleep(body["sleep"])
        status = body.get("status", 200)
        payload = json.dumps(
            {
                "made": body.get("widget_id"),
                "id": self.headers["X-Message-Id"],
                "count": self.headers.get("X-Claim-Count"),
            }
        ).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except BrokenPipeError:  # the timeout test hung up on purpose
            pass

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def widget_maker():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Widgets)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/widgets"
    srv.shutdown()
    srv.server_close()


def test_http_2xx_is_done_with_the_response_as_reply(widget_maker):
    r = HttpHandler(widget_maker).handle(msg({"widget_id": "w1", "status": 201}, claim_count=3), CTX)
    assert r.outcome == DONE and r.reply == {"made": "w1", "id": "m-1", "count": "3"}


def test_http_error_status_is_retry(widget_maker):
    r = HttpHandler(widget_maker).handle(msg({"status": 503}), CTX)
    assert r.outcome == RETRY and "HTTP 503" in r.error


def test_http_slow_answer_is_timeout(widget_maker):
    r = HttpHandler(widget_maker).handle(msg({"sleep": 1.0}), Context("jobs", "c", timeout=0.2))
    assert r.outcome == TIMEOUT


def test_http_refused_connection_is_retry():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = HttpHandler(f"http://127.0.0.1:{port}/").handle(msg({}), CTX)
    assert r.outcome == RETRY and "ConnectionError" in r.error


def test_http_url_must_be_http():
    with pytest.raises(ValueError, match="http:// or https://"):
        HttpHandler("ftp://x")

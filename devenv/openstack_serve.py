"""Serve one OpenStack WSGI application on 127.0.0.1, or run one service command (runs in the
OpenStack virtualenv).

    python -m devenv.openstack_serve --app nova.wsgi.osapi_compute:application --port P \\
        --config-dir-env OS_NOVA_CONFIG_DIR=DIR
    python -m devenv.openstack_serve --main nova.cmd.compute:main -- --config-dir DIR

The 2026.2 services ship WSGI modules but no launcher commands on Python 3.11; their modules parse
``sys.argv`` and find their config through ``OS_<SERVICE>_CONFIG_DIR``. This shim sets that
variable, resets argv, makes sqlite transactions take the write lock up front (as Keystone and
Heat do here), imports the application and serves it from threads with Keystone's server until
SIGTERM. Only the standard library is imported at module level.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys


def main(argv: list[str] | None = None) -> None:
    """Parse the options, then import and serve the application."""
    parser = argparse.ArgumentParser(prog="python -m devenv.openstack_serve")
    parser.add_argument(
        "--app",
        default=None,
        help="module:attribute of the WSGI application (a callable is called first "
        "when it is named with a trailing '()')",
    )
    parser.add_argument(
        "--main",
        default=None,
        help="module:function of a service command (nova-compute ...) to run instead, "
        "with the arguments after --",
    )
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (with --app)")
    parser.add_argument("args", nargs="*", help="the command's arguments (with --main)")
    parser.add_argument(
        "--config-dir-env",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="environment variable the service reads its config folder from",
    )
    parser.add_argument(
        "--config-file", default=None, help="config file passed as --config-file in the argv the app sees"
    )
    parser.add_argument("--access-log", default=None, help="file for one line per request")
    args = parser.parse_args(argv)
    for item in args.config_dir_env:
        name, _, value = item.partition("=")
        os.environ[name] = value
    # Nothing that imports eventlet may come before the app's module: Nova's WSGI modules pick
    # native threading themselves and refuse to start if eventlet was imported first.
    from devenv import keystone

    keystone.install_sqlite_begin_immediate(60000)
    if args.main:
        module, _, func = args.main.partition(":")
        sys.argv = [module.rsplit(".", 1)[-1], *args.args]
        sys.exit(getattr(importlib.import_module(module), func)())
    if not (args.app and args.port):
        parser.error("--app and --port, or --main, are required")
    sys.argv = [sys.argv[0]] + (["--config-file", args.config_file] if args.config_file else [])
    module, _, attr = args.app.partition(":")
    call = attr.endswith("()")
    app = getattr(importlib.import_module(module), attr.rstrip("()"))
    if call:
        app = app()
    keystone.serve_wsgi({args.port: bounded_input(app)}, args.access_log)


class _LimitedInput:
    """A request body of a known length: reads end there (the stdlib server hands apps the raw
    socket, and Glance reading past the end of an upload waited forever for bytes never sent)."""

    def __init__(self, raw, length: int):
        self.raw, self.left = raw, length

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.raw.read(size)
        self.left -= len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.raw.readline(size) if self.left > 0 else b""
        self.left -= len(data)
        return data

    def __iter__(self):
        return iter(self.readline, b"")


class _ChunkedInput(_LimitedInput):
    """A ``Transfer-Encoding: chunked`` request body, decoded (the stdlib server does not)."""

    def __init__(self, raw):
        super().__init__(raw, 0)
        self.done = False

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while not self.done and (size is None or size < 0 or len(out) < size):
            if self.left == 0:
                line = self.raw.readline(1024)
                self.left = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if self.left == 0:
                    while self.raw.readline(1024).strip():  # trailers, then the blank line
                        pass
                    self.done = True
                    break
            want = self.left if size is None or size < 0 else min(self.left, size - len(out))
            data = self.raw.read(want)
            if not data:
                self.done = True
                break
            out += data
            self.left -= len(data)
            if self.left == 0:
                self.raw.readline(8)  # the CRLF after each chunk
        return bytes(out)

    def readline(self, size: int = -1) -> bytes:
        return self.read(size if size and size > 0 else 65536)


def bounded_input(app):
    """WSGI middleware: ``wsgi.input`` ends where the request body ends (length or chunks)."""

    def call(environ, start_response):
        raw = environ["wsgi.input"]
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            environ["wsgi.input"] = _ChunkedInput(raw)
            environ.pop("CONTENT_LENGTH", None)
        else:
            environ["wsgi.input"] = _LimitedInput(raw, int(environ.get("CONTENT_LENGTH") or 0))
        return app(environ, start_response)

    return call


if __name__ == "__main__":
    main()

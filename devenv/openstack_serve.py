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
    parser.add_argument("--app", default=None,
                        help="module:attribute of the WSGI application (a callable is called first "
                        "when it is named with a trailing '()')")
    parser.add_argument("--main", default=None,
                        help="module:function of a service command (nova-compute ...) to run instead, "
                        "with the arguments after --")
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (with --app)")
    parser.add_argument("args", nargs="*", help="the command's arguments (with --main)")
    parser.add_argument("--config-dir-env", action="append", default=[], metavar="NAME=DIR",
                        help="environment variable the service reads its config folder from")
    parser.add_argument("--config-file", default=None,
                        help="config file passed as --config-file in the argv the app sees")
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
    keystone.serve_wsgi({args.port: app}, args.access_log)


if __name__ == "__main__":
    main()

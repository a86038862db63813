"""Runs inside the Zaqar virtualenv (never imported by the project): the WSGI entry for gunicorn
and the garbage-collection loop a real deployment of Zaqar's redis driver needs.

Both read the config file named by ``QW_ZAQAR_CONFIG``. Zaqar's stock WSGI module
(``zaqar.transport.wsgi.app``) only reads ``~/.zaqar`` or ``/etc/zaqar``, hence this entry.

``python zaqar_service.py gc INTERVAL`` runs the redis driver's own ``MessageController.gc``
every INTERVAL seconds (once if INTERVAL is 0). ``zaqar-gc`` cannot do it: it calls ``gc()`` on the storage pipeline,
which never reaches the redis driver. Without it, expired claims and messages stay in redis
and ``GET /v2/queues/Q/stats`` answers 503 for that queue.
"""

import os
import signal
import sys
import time


def _conf():
    from oslo_config import cfg
    from oslo_log import log

    conf = cfg.CONF
    log.register_options(conf)
    conf(project="zaqar", prog="qw-zaqar", args=[], default_config_files=[os.environ["QW_ZAQAR_CONFIG"]])
    log.setup(conf, "zaqar")
    return conf


def wsgi_application():
    """The Zaqar v2 WSGI app, configured from ``QW_ZAQAR_CONFIG`` (same steps as Zaqar's app.py)."""
    from zaqar import bootstrap
    from zaqar.common import consts

    conf = _conf()
    boot = bootstrap.Bootstrap(conf)
    conf.drivers.transport = consts.TRANSPORT_WSGI
    return boot.transport.app


def gc_loop(interval: float) -> None:
    """Collect expired messages and claims every ``interval`` seconds until SIGTERM/SIGINT."""
    from oslo_log import log
    from zaqar import bootstrap

    conf = _conf()
    logger = log.getLogger("qw.zaqar.gc")
    # Bootstrap.storage is the pipeline; its gc() is a no-op. The driver behind it does the work.
    driver = bootstrap.Bootstrap(conf).storage._storage
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        try:
            removed = driver.message_controller.gc()
            if removed:
                logger.info("gc removed %s expired messages", removed)
        except Exception:  # keep collecting: a redis hiccup must not end the loop
            logger.exception("gc failed")
            if interval <= 0:
                raise
        if interval <= 0:  # one collection, then exit
            return
        deadline = time.monotonic() + interval
        while not stop and time.monotonic() < deadline:
            time.sleep(0.2)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "gc":
        sys.exit("usage: zaqar_service.py gc INTERVAL_SECONDS")
    gc_loop(float(sys.argv[2]))
else:
    application = wsgi_application() if "QW_ZAQAR_CONFIG" in os.environ else None

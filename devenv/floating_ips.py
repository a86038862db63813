"""devenv's L3 agent: floating IPs of the local cloud that carry traffic from this machine.

Neutron here runs without agents, so a floating IP is only a record. This process (one per cloud,
started and stopped by :class:`devenv.cloud.CloudServices`) polls Neutron's floating IPs every
second as Neutron's own service user and does on this host what an L3 agent does in a router's
namespace for each floating IP associated with a port: a DNAT of the floating address to the
port's fixed address, and a route of the floating address to the server's veth (so the server
sees the connection come from its gateway). When the floating IP is released, or its port goes,
both are removed; on SIGTERM all of them (every rule carries :data:`COMMENT`).

What it does not do (the gap to a real L3 agent): only connections made from this machine are
translated (nat OUTPUT: nothing routes off this host, there is no external interface), a
server's own outbound traffic is not SNATed to its floating address, and Neutron keeps the
floating IP's status DOWN (an agent reports it over RPC).

    python -m devenv.floating_ips --config RUN_DIR/etc/floating-ips.json

The config (mode 0600) holds keystone_url, username, password, project_name.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

COMMENT = "queue-workers floating IP"
POLL_SECONDS = 1.0


def _ip(*args: str, check: bool = True) -> str:
    p = subprocess.run(args, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {p.stderr.strip()}")
    return p.stdout


def _rule(floating: str, fixed: str) -> list[str]:
    return [
        "-d",
        f"{floating}/32",
        "-m",
        "comment",
        "--comment",
        COMMENT,
        "-j",
        "DNAT",
        "--to-destination",
        fixed,
    ]


def current() -> dict[str, str]:
    """The floating -> fixed translations in place now (from nat OUTPUT)."""
    out = _ip("iptables", "-t", "nat", "-S", "OUTPUT")
    found = {}
    for line in out.splitlines():
        if COMMENT in line:
            m = re.search(r"-d (\S+)/32 .*--to-destination (\S+)", line)
            if m:
                found[m.group(1)] = m.group(2)
    return found


def _route_to(fixed: str) -> tuple[str, str] | None:
    """(device, source) of the host's route to a server's fixed address (its veth), if it exists."""
    m = re.search(r"dev (qw-\S+) .*src (\S+)", _ip("ip", "route", "get", fixed, check=False))
    return (m.group(1), m.group(2)) if m else None


def add(floating: str, fixed: str) -> bool:
    """Translate ``floating`` to ``fixed``; False while the server's veth is not there yet."""
    route = _route_to(fixed)
    if route is None:
        return False
    _ip("ip", "route", "replace", f"{floating}/32", "dev", route[0], "src", route[1])
    _ip("iptables", "-t", "nat", "-A", "OUTPUT", *_rule(floating, fixed))
    return True


def remove(floating: str, fixed: str) -> None:
    _ip("iptables", "-t", "nat", "-D", "OUTPUT", *_rule(floating, fixed), check=False)
    _ip("ip", "route", "del", f"{floating}/32", check=False)


def clear() -> None:
    """Remove every translation this agent made (idempotent)."""
    for floating, fixed in current().items():
        remove(floating, fixed)


def sync(wanted: dict[str, str]) -> None:
    """Make the host's translations exactly ``wanted`` (floating -> fixed)."""
    have = current()
    for floating, fixed in have.items():
        if wanted.get(floating) != fixed:
            remove(floating, fixed)
    for floating, fixed in wanted.items():
        if have.get(floating) != fixed:
            add(floating, fixed)


def associated(network) -> dict[str, str]:
    """Neutron's floating IPs that are associated with a port: floating -> fixed address."""
    ips = network.get("/v2.0/floatingips").json()["floatingips"]
    return {f["floating_ip_address"]: f["fixed_ip_address"] for f in ips if f.get("port_id")}


def _network(config: dict):
    from keystoneauth1 import adapter, session
    from keystoneauth1.identity import v3

    auth = v3.Password(
        auth_url=config["keystone_url"],
        username=config["username"],
        password=config["password"],
        project_name=config["project_name"],
        user_domain_name="Default",
        project_domain_name="Default",
    )
    return adapter.Adapter(session.Session(auth=auth), service_type="network", interface="public")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.floating_ips", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="JSON file with the credentials")
    args = parser.parse_args(argv)
    network = _network(json.loads(args.config.read_text()))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    clear()
    try:
        while not stopping:
            try:
                sync(associated(network))
            except Exception as e:  # Neutron restarting, a veth going: try again next round
                print(f"floating_ips: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            time.sleep(POLL_SECONDS)
    finally:
        clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())

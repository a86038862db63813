"""SSH to the builder with its host key pinned: the key cloud-init printed, and no other.

Fabric 3 accepts any host key by default (AutoAddPolicy). The bake reads the builder's host keys
from the console log (`-----BEGIN SSH HOST KEY KEYS-----` block cloud-init writes on first boot),
loads only those, and sets RejectPolicy: a server answering with another key is refused.
"""

from __future__ import annotations

import base64
import re

import paramiko
from fabric import Config, Connection

_KEYS_BLOCK = re.compile(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", re.S)
_KEY_LINE = re.compile(r"(ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa)\s+([A-Za-z0-9+/=]+)")


class HostKeyError(RuntimeError):
    """No usable SSH host key in the console log."""


def host_keys_from_console(console: str) -> list[tuple[str, str]]:
    """(type, base64) pairs from cloud-init's host key block of a console log (the last block wins)."""
    blocks = _KEYS_BLOCK.findall(console or "")
    if not blocks:
        raise HostKeyError("the console log has no '-----BEGIN SSH HOST KEY KEYS-----' block (yet)")
    keys = _KEY_LINE.findall(blocks[-1])
    if not keys:
        raise HostKeyError("cloud-init's host key block in the console log holds no key")
    return keys


def known_host_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def pinned_connection(
    host: str,
    port: int,
    user: str,
    key_filename: str,
    host_keys: list[tuple[str, str]],
    connect_timeout: int = 15,
) -> Connection:
    """A Fabric Connection that accepts only `host_keys` for host:port (RejectPolicy otherwise)."""
    cfg = Config(overrides={"run": {"in_stream": False}, "sudo": {"user": "root"}, "load_ssh_configs": False})
    c = Connection(
        host,
        port=port,
        user=user,
        config=cfg,
        connect_timeout=connect_timeout,
        connect_kwargs={"key_filename": key_filename, "look_for_keys": False, "allow_agent": False},
    )
    name = known_host_name(host, port)
    hk = c.client.get_host_keys()
    hk.clear()
    for ktype, b64 in host_keys:
        hk.add(name, ktype, paramiko.PKey.from_type_string(ktype, base64.b64decode(b64)))
    c.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return c

"""Fixtures of the cloud tests: the session's local cloud (root conftest) seen as its member user.

``member`` is an openstacksdk Connection of the demo user (role member on project demo);
``admin`` the admin's, for checks a member cannot make (every project's servers and ports).
``make_keypair`` makes fresh SSH key pairs: the private key (``.private``) and its Nova key pair.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest


@pytest.fixture(scope="session")
def member(cloud):
    return cloud.connection("local")


@pytest.fixture(scope="session")
def admin(cloud):
    return cloud.connection("local-admin")


@dataclasses.dataclass
class KeyPair:
    name: str
    public: str
    private: object  # a paramiko key


@pytest.fixture
def unique():
    """Factory of unique resource names: ``unique("sg")`` -> ``qw-sg-1a2b3c4d``."""
    return lambda kind: f"qw-{kind}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_keypair(member, unique):
    """Factory: ``make_keypair(name=None)`` -> a :class:`KeyPair` from an Ed25519 key made here,
    registered as the member's Nova key pair (deleted after the test)."""
    import io

    import paramiko
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    made = []

    def make(name: str | None = None) -> KeyPair:
        key = ed25519.Ed25519PrivateKey.generate()
        public = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
        pair = KeyPair(name or unique("key"), public, paramiko.Ed25519Key.from_private_key(io.StringIO(pem)))
        member.compute.create_keypair(name=pair.name, public_key=public)
        made.append(pair.name)
        return pair

    yield make
    for name in made:
        member.compute.delete_keypair(name, ignore_missing=True)

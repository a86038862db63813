"""Dynamic providers of the broker server's secrets: its TLS certificate and its users' passwords.

**Why a dynamic provider on ``cryptography``, not pulumi-tls / pulumi-random.** Both are provider
plugins the Pulumi CLI downloads, which cannot be fetched here; these run in the program's own
Python (``cryptography`` is a pinned requirement), so ``devenv/pulumi_local.py`` and the tests
under Pulumi's mocks run their real ``create``. Each makes its values once, at creation: they stay
in the state (every output a secret, encrypted) until an input changes, which replaces them.

``BrokerCertificate``: a CA made for this broker alone and a server certificate it signs for the
broker's addresses (``ip_addresses``, ``dns_names``: the Neutron port's fixed IP, so declare the
port first). The CA's key is thrown away once it signed: nothing else can ever be signed by it.
Outputs ``ca_pem``, ``cert_pem``, ``key_pem``.

``BrokerPasswords``: a random password per user name and its RabbitMQ password hash (salted
SHA-256, ``rabbit_password_hashing_sha256``), so the definitions file loaded at boot holds hashes
and the same hash every ``pulumi up`` (a fresh salt each time would rewrite the server's user data).
Outputs ``passwords`` and ``hashes`` (user -> text).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import secrets
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi.dynamic as dyn

CERT_OUTPUTS = ("ca_pem", "cert_pem", "key_pem")
PASSWORD_OUTPUTS = ("passwords", "hashes")


def rabbit_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's stored form of ``password``: base64(salt + sha256(salt + password)), 4-byte salt."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def make_certificate(
    common_name: str, ip_addresses: list[str], dns_names: list[str], days: int
) -> dict[str, str]:
    """A fresh CA and a server certificate for these addresses signed by it (EC P-256), as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} CA")])

    def builder(subject, public_key, ca: bool):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        )

    ca = (
        builder(ca_name, ca_key.public_key(), True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    alt: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    alt += [x509.DNSName(n) for n in dns_names]
    server = (
        builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key.public_key(), False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return {
        "ca_pem": ca.public_bytes(pem).decode(),
        "cert_pem": server.public_bytes(pem).decode(),
        "key_pem": key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    }


def _replace_on(olds: dict[str, Any], news: dict[str, Any], keys: tuple[str, ...]) -> dyn.DiffResult:
    changed = [k for k in keys if olds.get(k) != news.get(k)]
    return dyn.DiffResult(changes=bool(changed), replaces=changed, stables=[], delete_before_replace=False)


class CertificateProvider(dyn.ResourceProvider):
    """A CA and the broker's server certificate; any change of addresses makes both anew."""

    pure = True  # makes nothing outside the state: the mocks run its real create (infra.mocks)
    inputs = ("common_name", "ip_addresses", "dns_names", "days")

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.CheckResult:
        failures = []
        for a in news.get("ip_addresses") or ():
            try:
                ipaddress.ip_address(a)
            except ValueError:
                failures.append(dyn.CheckFailure("ip_addresses", f"{a!r} is not an IP address"))
        if not (news.get("ip_addresses") or news.get("dns_names")):
            failures.append(dyn.CheckFailure("ip_addresses", "at least one address or DNS name"))
        return dyn.CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        made = make_certificate(
            props["common_name"],
            list(props.get("ip_addresses") or ()),
            list(props.get("dns_names") or ()),
            int(props["days"]),
        )
        return dyn.CreateResult(id_=secrets.token_hex(8), outs={**props, **made})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        return _replace_on(olds, news, self.inputs)


class PasswordsProvider(dyn.ResourceProvider):
    """A random password and its RabbitMQ hash per user; a new list of users makes them anew."""

    pure = True
    inputs = ("users",)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        passwords = {u: secrets.token_urlsafe(24) for u in props["users"]}
        hashes = {u: rabbit_hash(p) for u, p in passwords.items()}
        return dyn.CreateResult(
            id_=secrets.token_hex(8), outs={**props, "passwords": passwords, "hashes": hashes}
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        return _replace_on(olds, news, self.inputs)


class BrokerCertificate(dyn.Resource, module="queue-workers", name="BrokerCertificate"):
    """The broker's CA and server certificate (``key_pem`` and every output secret)."""

    ca_pem: pulumi.Output[str]
    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        common_name: str,
        ip_addresses: pulumi.Input[Sequence[str]],
        dns_names: Sequence[str] = (),
        days: int = 825,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "common_name": common_name,
            "ip_addresses": ip_addresses,
            "dns_names": list(dns_names),
            "days": days,
            **dict.fromkeys(CERT_OUTPUTS),
        }
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=list(CERT_OUTPUTS))
        )
        super().__init__(CertificateProvider(), resource_name, props, opts)


class BrokerPasswords(dyn.Resource, module="queue-workers", name="BrokerPasswords"):
    """A password and its RabbitMQ hash per broker user (both outputs secret)."""

    passwords: pulumi.Output[dict]
    hashes: pulumi.Output[dict]

    def __init__(self, resource_name: str, users: list[str], opts: pulumi.ResourceOptions | None = None):
        props = {"users": list(users), **dict.fromkeys(PASSWORD_OUTPUTS)}
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=list(PASSWORD_OUTPUTS))
        )
        super().__init__(PasswordsProvider(), resource_name, props, opts)

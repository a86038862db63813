"""The consumer template definition (images/consumer/template.yaml) as a validated object.

Pure: reads files, no I/O to hosts or clouds. The content hash covers every file of the template
folder and the bake steps' source, so "unchanged content" (reuse an existing template image)
means: same definition, same steps, same workload image.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

TEMPLATE_DIR = Path(__file__).resolve().parent / "consumer"
DOCKER_METHODS = ("distro", "docker-ce")
DOCKER_CE_REPOSITORY = "https://download.docker.com/linux/debian"
# Docker's release key, as docs.docker.com/engine/install/debian publishes it.
DOCKER_CE_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"


class TemplateError(ValueError):
    """The template definition is invalid; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Template:
    name: str
    version: int
    base_image_name: str
    base_image_properties: dict
    login_user: str
    flavor: str
    packages: list[str]
    docker_method: str
    docker_ce_repository: str
    docker_ce_suite: str
    docker_ce_key_fingerprint: str  # 40 hex digits, upper case
    daemon_json: str  # file content
    workload_image: str
    unit_name: str
    unit: str  # file content
    env_file: str
    directory: Path = field(default=TEMPLATE_DIR)

    def content_hash(self, workload_image_id: str = "", extra_image_ids: tuple[str, ...] = ()) -> str:
        """sha256 over the template folder, the bake steps, the workload image id and the ids of
        the further images (``--extra-image``; none: the hash of a template without them)."""
        h = hashlib.sha256()
        files = sorted(p for p in self.directory.rglob("*") if p.is_file())
        files.append(Path(__file__).resolve().parent / "steps.py")
        for p in files:
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
        h.update(workload_image_id.encode())
        for extra in sorted(extra_image_ids):  # a template with another extra image is another template
            h.update(b"\0extra\0" + extra.encode())
        # What flags can change without touching a file: a docker-ce template is not a distro one.
        h.update(
            "\0".join(
                (
                    self.docker_method,
                    self.docker_ce_repository,
                    self.docker_ce_suite,
                    self.docker_ce_key_fingerprint,
                )
            ).encode()
        )
        return h.hexdigest()


def _require(doc: dict, key: str, kind, where: str = ""):
    if key not in doc:
        raise TemplateError(f"template.yaml: missing key {where}{key}")
    val = doc[key]
    if not isinstance(val, kind):
        raise TemplateError(
            f"template.yaml: {where}{key} = {val!r} must be {getattr(kind, '__name__', kind)}"
        )
    return val


def fingerprint(value: str, where: str = "docker.docker_ce_key_fingerprint") -> str:
    """An OpenPGP v4 fingerprint, normalised (spaces dropped, upper case), or TemplateError."""
    fpr = "".join(str(value).split()).upper()
    if not re.fullmatch(r"[0-9A-F]{40}", fpr):
        raise TemplateError(f"{where} = {value!r}: a key fingerprint is 40 hex digits (spaces allowed)")
    return fpr


def repository_url(value: str, where: str = "docker.docker_ce_repository") -> str:
    """An http(s) URL of an apt repository, or TemplateError."""
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TemplateError(f"{where} = {value!r}: an apt repository URL, http:// or https://")
    return str(value).rstrip("/")


def load(
    directory: Path = TEMPLATE_DIR,
    docker_method: str | None = None,
    docker_repository: str | None = None,
    docker_key_fingerprint: str | None = None,
) -> Template:
    """Load and validate the template; the arguments override docker.method,
    docker.docker_ce_repository and docker.docker_ce_key_fingerprint."""
    doc = yaml.safe_load((directory / "template.yaml").read_text())
    base = _require(doc, "base_image", dict)
    docker = _require(doc, "docker", dict)
    method = docker_method or _require(docker, "method", str, "docker.")
    if method not in DOCKER_METHODS:
        raise TemplateError(f"docker.method = {method!r}: allowed {', '.join(DOCKER_METHODS)}")
    version = _require(doc, "version", int)
    if version < 1:
        raise TemplateError(f"template.yaml: version = {version} must be >= 1")
    unit_name = _require(doc, "unit", str)
    return Template(
        name=_require(doc, "name", str),
        version=version,
        base_image_name=_require(base, "name", str, "base_image."),
        base_image_properties=dict(base.get("properties") or {}),
        login_user=_require(doc, "login_user", str),
        flavor=_require(doc, "flavor", str),
        packages=list(_require(doc, "packages", list)),
        docker_method=method,
        docker_ce_repository=repository_url(
            docker_repository or docker.get("docker_ce_repository", DOCKER_CE_REPOSITORY),
            "--docker-repository" if docker_repository else "docker.docker_ce_repository",
        ),
        docker_ce_suite=docker.get("docker_ce_suite", "bookworm"),
        docker_ce_key_fingerprint=fingerprint(
            docker_key_fingerprint or docker.get("docker_ce_key_fingerprint", DOCKER_CE_KEY_FINGERPRINT),
            "--docker-key-fingerprint" if docker_key_fingerprint else "docker.docker_ce_key_fingerprint",
        ),
        daemon_json=(directory / _require(docker, "daemon_json", str, "docker.")).read_text(),
        workload_image=_require(doc, "workload_image", str),
        unit_name=unit_name,
        unit=(directory / unit_name).read_text(),
        env_file=_require(doc, "env_file", str),
        directory=directory,
    )

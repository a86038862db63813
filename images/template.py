"""The consumer template definition (images/consumer/template.yaml) as a validated object.

Pure: reads files, no I/O to hosts or clouds. The content hash covers every file of the template
folder and the bake steps' source, so "unchanged content" (reuse an existing template image)
means: same definition, same steps, same workload image.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TEMPLATE_DIR = Path(__file__).resolve().parent / "consumer"
DOCKER_METHODS = ("distro", "docker-ce")


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
    daemon_json: str                    # file content
    workload_image: str
    unit_name: str
    unit: str                           # file content
    env_file: str
    directory: Path = field(default=TEMPLATE_DIR)

    def content_hash(self, workload_image_id: str = "") -> str:
        """sha256 over the template folder, the bake steps and the workload image id."""
        h = hashlib.sha256()
        files = sorted(p for p in self.directory.rglob("*") if p.is_file())
        files.append(Path(__file__).resolve().parent / "steps.py")
        for p in files:
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
        h.update(workload_image_id.encode())
        return h.hexdigest()


def _require(doc: dict, key: str, kind, where: str = ""):
    if key not in doc:
        raise TemplateError(f"template.yaml: missing key {where}{key}")
    val = doc[key]
    if not isinstance(val, kind):
        raise TemplateError(f"template.yaml: {where}{key} = {val!r} must be {getattr(kind, '__name__', kind)}")
    return val


def load(directory: Path = TEMPLATE_DIR, docker_method: str | None = None) -> Template:
    """Load and validate the template; `docker_method` overrides docker.method."""
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
        docker_ce_repository=docker.get("docker_ce_repository", "https://download.docker.com/linux/debian"),
        docker_ce_suite=docker.get("docker_ce_suite", "bookworm"),
        daemon_json=(directory / _require(docker, "daemon_json", str, "docker.")).read_text(),
        workload_image=_require(doc, "workload_image", str),
        unit_name=unit_name,
        unit=(directory / unit_name).read_text(),
        env_file=_require(doc, "env_file", str),
        directory=directory,
    )

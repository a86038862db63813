"""Build the workload container image without a registry, and save it as a docker-archive tar.

    python -m devenv.builder.image [--output build/queue-workers-image.tar] [--tag NAME]

Steps (each timed on stderr):
1. the container base rootfs (mmdebstrap, cached under .cache/image/) is imported into podman and
   tagged with the exact name workload/Dockerfile's FROM line uses;
2. `podman build --pull=never` from a small staged context (requirements.txt + workload/), passing
   this machine's pip index settings as build args;
3. `podman save --format docker-archive`, which `docker load` accepts, plus a JSON record next to
   it (tag, image id = the digest the bake records on the template).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from devenv.builder import rootfs

REPO_ROOT = rootfs.REPO_ROOT
DOCKERFILE = REPO_ROOT / "workload" / "Dockerfile"
DEFAULT_TAG = "localhost/queue-workers/workload:latest"
DEFAULT_OUTPUT = REPO_ROOT / "build" / "queue-workers-image.tar"
PIP_BUILD_ARGS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT")


def _log(msg: str) -> None:
    print(f"[image] {msg}", file=sys.stderr, flush=True)


def base_image_name(dockerfile: Path = DOCKERFILE) -> str:
    """The image name the Dockerfile's (first) FROM line names."""
    for line in dockerfile.read_text().splitlines():
        m = re.match(r"\s*FROM\s+(\S+)", line, re.IGNORECASE)
        if m:
            return m.group(1)
    raise ValueError(f"{dockerfile}: no FROM line")


def _pip_setting(name: str) -> str | None:
    """A pip setting from the environment or `pip config` (covers /etc/pip.conf, /etc/xdg/pip)."""
    if os.environ.get(name):
        return os.environ[name]
    key = "global." + name[len("PIP_") :].lower().replace("_", "-")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", key], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def pip_build_args() -> dict[str, str]:
    """Build args that let pip inside the build reach the same index this machine uses."""
    return {k: v for k in PIP_BUILD_ARGS if (v := _pip_setting(k))}


def _podman(*args: str, capture: bool = False) -> str:
    if shutil.which("podman") is None:
        raise RuntimeError("podman is not installed: run devenv/builder/install-deps.sh (make builder-deps)")
    res = subprocess.run(
        ["podman", *args], check=True, text=True, stdout=subprocess.PIPE if capture else None
    )
    return (res.stdout or "").strip()


BASE_RECIPE_LABEL = "org.queue-workers.base-recipe"


def ensure_base_image(name: str | None = None) -> str:
    """Import the cached base rootfs into podman as `name` unless an image of that name made from
    the same recipe (label BASE_RECIPE_LABEL) exists."""
    name = name or base_image_name()
    recipe = rootfs.base_recipe()
    have = subprocess.run(
        ["podman", "image", "inspect", "--format", f'{{{{index .Labels "{BASE_RECIPE_LABEL}"}}}}', name],
        capture_output=True,
        text=True,
    )
    if have.returncode == 0 and have.stdout.strip() == recipe:
        return name
    tar = rootfs.container_base_tar()
    _log(f"importing {tar.name} as {name}")
    _podman(
        "import",
        "--change",
        'CMD ["python3"]',
        "--change",
        f"LABEL {BASE_RECIPE_LABEL}={recipe}",
        str(tar),
        name,
        capture=True,
    )
    return name


def _stage_context(dest: Path) -> None:
    shutil.copy2(REPO_ROOT / "requirements.txt", dest / "requirements.txt")
    shutil.copytree(
        REPO_ROOT / "workload",
        dest / "workload",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "Dockerfile"),
    )


def build(tag: str = DEFAULT_TAG, output: Path = DEFAULT_OUTPUT) -> dict:
    """Build the workload image and write the docker-archive; returns the record written beside it."""
    return build_archive(DOCKERFILE, _stage_context, tag, output)


def build_archive(
    dockerfile: Path,
    stage_context: Callable[[Path], None],
    tag: str,
    output: Path,
    build_args: dict | None = None,
) -> dict:
    """Build ``dockerfile`` (FROM the container base, no registry) with the context
    ``stage_context(dir)`` puts together, and save it as a docker-archive at ``output``, with a
    JSON record beside it. Also the RabbitMQ image's builder (:mod:`devenv.builder.rabbitmq_image`)."""
    steps: list[tuple[str, float]] = []

    def step(label, fn, *a):
        t0 = time.monotonic()
        _log(f"{label} ...")
        r = fn(*a)
        steps.append((label, time.monotonic() - t0))
        _log(f"{label}: done in {steps[-1][1]:.1f}s")
        return r

    with rootfs.locked(rootfs.cache_dir() / "image" / ".build.lock"):  # one build at a time
        return _build(dockerfile, stage_context, tag, output, build_args or {}, steps, step)


def _build(dockerfile, stage_context, tag, output, build_args, steps, step) -> dict:
    base = step("base image", ensure_base_image, base_image_name(dockerfile))
    with tempfile.TemporaryDirectory(prefix="qw-image-ctx-") as ctx:
        stage_context(Path(ctx))
        args = [
            "build",
            "--pull=never",
            "--network=host",
            "--layers",
            "--format",
            "docker",
            "-f",
            str(dockerfile),
            "-t",
            tag,
        ]
        for k, v in {**pip_build_args(), **build_args}.items():
            args += ["--build-arg", f"{k}={v}"]
        step("podman build", _podman, *args, ctx)
    image_id = _podman("image", "inspect", "--format", "{{.Id}}", tag, capture=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    step("podman save", _podman, "save", "--format", "docker-archive", "-o", str(tmp), tag)
    tmp.rename(output)
    record = {
        "tag": tag,
        "image_id": f"sha256:{image_id}" if not image_id.startswith("sha256:") else image_id,
        "base_image": base,
        "archive": output.name,
        "archive_bytes": output.stat().st_size,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "steps": {label: round(sec, 1) for label, sec in steps},
    }
    output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    _log(f"wrote {output} ({record['archive_bytes'] / 1e6:.0f} MB), image {record['image_id'][:19]}")
    return record


def sources() -> list[Path]:
    """What the image is built from: the Dockerfile, the requirements and the workload's code."""
    return [DOCKERFILE, REPO_ROOT / "requirements.txt", *(REPO_ROOT / "workload").rglob("*.py")]


def current(output: Path = DEFAULT_OUTPUT) -> Path:
    """The docker-archive at ``output``, built first if it is missing or older than a source (so
    a test never bakes yesterday's consumer)."""
    record = output.with_suffix(".json")
    if not (output.exists() and record.exists()) or output.stat().st_mtime < max(
        p.stat().st_mtime for p in sources()
    ):
        build(output=output)
    return output


def cli(argv, module: str, doc: str, tag: str, output: Path, build_fn) -> int:
    """``python -m MODULE [--tag] [--output]``: build one image archive, print its record."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    p.add_argument("--tag", default=tag, help=f"image name to build (default {tag})")
    p.add_argument(
        "--output",
        type=Path,
        default=output,
        help=f"docker-archive to write (default {output.relative_to(REPO_ROOT)})",
    )
    a = p.parse_args(argv)
    print(json.dumps(build_fn(a.tag, a.output)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli(argv, "devenv.builder.image", __doc__, DEFAULT_TAG, DEFAULT_OUTPUT, build)


if __name__ == "__main__":
    sys.exit(main())

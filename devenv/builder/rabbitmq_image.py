"""Build the broker server's RabbitMQ image offline, from Debian's ``rabbitmq-server`` package.

    python -m devenv.builder.rabbitmq_image [--output build/rabbitmq-image.tar] [--tag NAME]

The official image the stack defaults to (``amqpBrokerImage``,
docker.io/library/rabbitmq:3.13.7-management) cannot be pulled here (no registry is reachable),
so for the local cloud, and any air-gapped one, this builds a stand-in the same way
:mod:`devenv.builder.image` builds the workload image: the container base (mmdebstrap, cached) is
imported into podman, ``podman build --pull=never`` installs Debian bookworm's rabbitmq-server
with the management plugin enabled (devenv/builder/rabbitmq.Dockerfile), and ``podman save``
writes a docker-archive that ``fab bake-template --extra-image`` loads into the template. It is
laid out where the broker server's unit (infra/broker.py) expects the official image's paths:
conf.d, definitions and TLS under /etc/rabbitmq, data under /var/lib/rabbitmq, user rabbitmq
with uid 999, the env variables the unit sets, the default command starting the server.

**The gap**: RabbitMQ 3.10 (Debian's) on Erlang 25, not 3.13.7; no docker-entrypoint.sh (the
stack uses none of its variables) and no gosu (the container runs as rabbitmq from the start).
The record beside the archive names the exact Debian package version.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from devenv.builder import image

DOCKERFILE = Path(__file__).with_name("rabbitmq.Dockerfile")
#: Pinned by tag as amqpBrokerImage requires; 3.10 is bookworm's rabbitmq-server.
DEFAULT_TAG = "localhost/queue-workers/rabbitmq:3.10-debian-management"
DEFAULT_OUTPUT = image.REPO_ROOT / "build" / "rabbitmq-image.tar"


def _stage_context(dest: Path) -> None:
    """Nothing to copy: everything comes from Debian's archive."""
    (dest / ".keep").write_text("")


def build(tag: str = DEFAULT_TAG, output: Path = DEFAULT_OUTPUT) -> dict:
    """Build the image and write the docker-archive; returns the record written beside it (with
    ``rabbitmq_debian_version``, the package installed)."""
    record = image.build_archive(DOCKERFILE, _stage_context, tag, output)
    version = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "cat",
            tag,
            "/etc/rabbitmq/debian-version",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    record["rabbitmq_debian_version"] = version
    output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def archive(output: Path = DEFAULT_OUTPUT, tag: str = DEFAULT_TAG) -> Path:
    """The archive at ``output``, built first if it is not there (or was built under another tag)."""
    meta = output.with_suffix(".json")
    if output.is_file() and meta.is_file() and json.loads(meta.read_text()).get("tag") == tag:
        return output
    if shutil.which("podman") is None:
        raise RuntimeError("podman is not installed: run devenv/builder/install-deps.sh (make builder-deps)")
    build(tag, output)
    return output


def main(argv: list[str] | None = None) -> int:
    return image.cli(argv, "devenv.builder.rabbitmq_image", __doc__, DEFAULT_TAG, DEFAULT_OUTPUT, build)


if __name__ == "__main__":
    sys.exit(main())

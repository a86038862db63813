"""fab tasks for the consumer template: bake-template, prune-templates (steps live in images/)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from invoke import Exit, task

from images import bake as bake_mod


@task(
    auto_shortflags=False,
    help={
        "cloud": "cloud name in clouds.yaml (default: $OS_CLOUD, or the OS_* environment)",
        "region": "region to bake in (default: the cloud's region_name)",
        "base-image": "base image name or id (default: the template's filter: debian-12 with os_distro=debian, newest)",
        "flavor": "builder flavor (default: the template's, m1.small)",
        "network": "network (name or id) for the builder's port (default: the cloud's default network)",
        "floating-ip-network": "external network: give the builder a floating IP from it (when its fixed "
                               "address is not reachable from here)",
        "image-archive": "docker-archive of the workload image to load (default: build/queue-workers-image.tar, "
                         "made by `make image`)",
        "image-reference": "instead of an archive, an image reference the builder pulls (e.g. a registry tag)",
        "template-name": "name of the template image (default: queue-workers-consumer-v<version>-<UTC time>)",
        "docker-method": "how Docker is installed: distro (Debian's docker.io) or docker-ce (Docker's apt "
                         "repository); default: the template's",
        "docker-repository": "with docker-ce: the apt repository to install from, e.g. a mirror of Docker's "
                             "(default: the template's, https://download.docker.com/linux/debian)",
        "docker-key-fingerprint": "with docker-ce: fingerprint of the key the repository signs with; its <repository>/gpg "
                                  "must be that key (default: Docker's, 9DC8 5822 9FC7 DD38 854A E2D8 8D81 803C 0EBF CD88)",
        "keep-builder-on-error": "on failure, keep the builder server, floating IP, key pair and security "
                                 "group for debugging (a half-made image is still deleted)",
        "force": "bake even if a complete template with the same content already exists",
        "ssh-port": "port the builder's sshd listens on (default 22)",
        "ssh-source": "CIDR allowed to SSH to the builder (default: this machine's address towards the cloud, /32)",
        "manifest": "where to write the manifest JSON (default: build/template-manifest.json)",
        "timeout": "seconds to wait for each of: server ACTIVE, console host keys, image active (default 1800)",
    },
)
def bake_template(c, cloud=None, region=None, base_image=None, flavor=None, network=None,
                  floating_ip_network=None, image_archive=None, image_reference=None, template_name=None,
                  docker_method=None, docker_repository=None, docker_key_fingerprint=None,
                  keep_builder_on_error=False, force=False, ssh_port=22, ssh_source=None, manifest=None, timeout=1800):
    """Bake the consumer template image: builder server, Docker, workload image, unit, snapshot.

    Needs OpenStack credentials the usual way (clouds.yaml with --cloud / $OS_CLOUD, or OS_*
    variables) allowing: key pairs, servers (create, console output, stop, createImage, delete),
    images (list, show, update, delete), security groups and rules, floating IPs. Everything the
    bake creates besides the template image is deleted at the end, also on failure and Ctrl-C.
    Unchanged content (template files, bake steps, workload image) reuses the existing template
    unless --force. Prints each step with its time; writes a manifest JSON.
    """
    opts = bake_mod.BakeOptions(
        cloud=cloud, region=region, base_image=base_image, flavor=flavor, network=network,
        floating_ip_network=floating_ip_network, image_archive=Path(image_archive) if image_archive else None,
        image_reference=image_reference, template_name=template_name, docker_method=docker_method,
        docker_repository=docker_repository, docker_key_fingerprint=docker_key_fingerprint,
        keep_builder_on_error=keep_builder_on_error, force=force, ssh_port=int(ssh_port), ssh_source=ssh_source,
        manifest=Path(manifest) if manifest else bake_mod.DEFAULT_MANIFEST, timeout=float(timeout))
    try:
        result = bake_mod.bake(opts)
    except (bake_mod.BakeError, ValueError) as e:
        raise Exit(f"bake-template: {e}", code=1)
    except KeyboardInterrupt:
        raise Exit("bake-template: interrupted; everything the bake created was cleaned up (see above)", code=130)
    print(json.dumps({"template_image_id": result["template_image_id"], "template_name": result["template_name"],
                      "reused": result["reused"]}))


@task(
    auto_shortflags=False,
    help={
        "keep": "how many of the newest complete templates to keep (at least 1; default 3)",
        "cloud": "cloud name in clouds.yaml (default: $OS_CLOUD, or the OS_* environment)",
        "region": "region (default: the cloud's region_name)",
        "name": "template name to prune (default: the template's, queue-workers-consumer)",
        "dry-run": "only print what would be deleted",
    },
)
def prune_templates(c, keep=3, cloud=None, region=None, name=None, dry_run=False):
    """Delete old template images, keeping the newest N and any a server or a Heat stack uses.

    Needs credentials (as for bake-template) allowed to list servers, list and delete images, and,
    where the cloud has Heat, list stacks and show each one and its template: a stack it cannot
    read stops the prune with nothing deleted. Prints which server or stack keeps an image, then
    a JSON line of what was kept, deleted and found in use.
    """
    conn = bake_mod.connect(bake_mod.BakeOptions(cloud=cloud, region=region))
    try:
        result = bake_mod.prune(conn, int(keep), name=name, dry_run=dry_run)
    except bake_mod.BakeError as e:
        raise Exit(f"prune-templates: {e}", code=1)
    print(json.dumps(result), file=sys.stdout)

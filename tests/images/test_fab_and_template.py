"""The fab task list and help, and the template definition (pure: no hosts, no cloud)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from images import template
from images.bake import archive_image_id, template_name

REPO_ROOT = Path(__file__).resolve().parents[2]
FAB = [str(Path(sys.executable).with_name("fab")), "-r", str(REPO_ROOT)]


def _fab(*args):
    return subprocess.run([*FAB, *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)


def test_fab_list_shows_each_task_with_a_line_of_help():
    out = _fab("--list")
    assert out.returncode == 0, out.stderr
    lines = {ln.split()[0]: ln for ln in out.stdout.splitlines() if ln.startswith("  ") and ln.split()}
    assert "Bake the consumer template image" in lines["bake-template"]
    assert "Delete old template images" in lines["prune-templates"]


@pytest.mark.parametrize(
    "task,options",
    [
        (
            "bake-template",
            [
                "--cloud",
                "--region",
                "--base-image",
                "--flavor",
                "--network",
                "--floating-ip-network",
                "--image-archive",
                "--image-reference",
                "--extra-image",
                "--template-name",
                "--keep-builder-on-error",
                "--force",
                "--docker-method",
                "--ssh-port",
                "--ssh-source",
                "--manifest",
                "--timeout",
            ],
        ),
        ("prune-templates", ["--keep", "--cloud", "--region", "--name", "--dry-run"]),
    ],
)
def test_fab_help_documents_every_option(task, options):
    out = _fab("--help", task)
    assert out.returncode == 0, out.stderr
    body = out.stdout.split("Options:", 1)[1]
    for opt in options:
        line = next((ln for ln in body.splitlines() if ln.strip().startswith(opt)), None)
        assert line is not None, f"{opt} missing from fab --help {task}"
        assert len(line.split(None, 1)) == 2, f"{opt} has no help text"


def test_template_loads_and_rejects_an_unknown_docker_method():
    t = template.load()
    assert t.docker_method in template.DOCKER_METHODS and t.unit_name.endswith(".service")
    assert '"max-size"' in t.daemon_json and "EnvironmentFile=/etc/queue-workers/consumer.env" in t.unit
    assert template.load(docker_method="docker-ce").docker_method == "docker-ce"
    with pytest.raises(template.TemplateError, match="docker.method = 'snap': allowed distro, docker-ce"):
        template.load(docker_method="snap")


def test_content_hash_follows_the_workload_image_and_names_carry_the_version():
    t = template.load()
    assert t.content_hash("sha256:aa") == t.content_hash("sha256:aa") != t.content_hash("sha256:bb")
    assert template_name(t, 0) == f"{t.name}-v{t.version}-19700101-000000"


def test_archive_image_id_reads_the_docker_archive_manifest(tmp_path):
    import io
    import json
    import tarfile

    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tf:
        data = json.dumps([{"Config": "abc123.json", "RepoTags": ["x:latest"], "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    assert archive_image_id(path) == "sha256:abc123"


def test_every_bake_option_is_a_fab_option_with_its_help():
    from images.bake import BakeOptions

    body = _fab("--help", "bake-template").stdout.split("Options:", 1)[1]
    flat = " ".join(body.split())
    for f in BakeOptions.cli_fields():
        flag = "--" + f.name.replace("_", "-")
        assert flag in body, flag
        assert " ".join(f.metadata["help"].split())[:30] in flat, flag


def test_fab_values_become_typed_bake_options():
    from images.bake import DEFAULT_MANIFEST, BakeOptions

    opts = BakeOptions.from_cli(
        {"ssh_port": "2222", "timeout": "2.5", "image_archive": "a.tar", "force": True}
    )
    assert (opts.ssh_port, opts.timeout, opts.image_archive, opts.force) == (2222, 2.5, Path("a.tar"), True)
    assert (
        BakeOptions.from_cli({}).manifest == DEFAULT_MANIFEST and BakeOptions.from_cli({}).timeout == 1800.0
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (["--ssh-port", "70000"], "--ssh-port='70000' is not allowed: a port number from 1 to 65535"),
        (["--ssh-port", "ssh"], "--ssh-port='ssh' is not allowed: a port number from 1 to 65535"),
        (["--timeout=-5"], "--timeout='-5' is not allowed: a number of seconds above 0"),
    ],
)
def test_a_bad_bake_option_is_refused_by_name_before_anything_else(args, words, tmp_path):
    # An image archive that does not exist: a bake that got past its options would stop there
    # (exit 1, naming the archive) before it connects to any cloud.
    out = _fab("bake-template", "--image-archive", str(tmp_path / "none.tar"), *args)
    assert out.returncode == 2, out.stderr
    assert words in out.stderr and "Traceback" not in out.stderr


def test_fab_takes_a_fractional_timeout():
    # The task's options are text to fab (a number's default would make it cast to int), so
    # --timeout 2.5 reaches the options as 2.5; the missing archive then stops the bake.
    out = _fab("bake-template", "--timeout", "2.5", "--image-archive", "none.tar")
    assert out.returncode == 1 and "image archive none.tar does not exist" in out.stderr, out.stderr


def _docker_archive(path: Path, digest: str) -> Path:
    import io
    import json
    import tarfile

    with tarfile.open(path, "w") as tf:
        data = json.dumps([{"Config": f"{digest}.json", "RepoTags": ["x:1"], "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return path


def test_extra_image_is_repeatable_and_typed():
    from images.bake import BakeOptions

    opts = BakeOptions.from_cli({"extra_image": ["a.tar", "b.tar"]})
    assert opts.extra_image == (Path("a.tar"), Path("b.tar"))
    assert BakeOptions.from_cli({}).extra_image == () == BakeOptions.from_cli({"extra_image": []}).extra_image


def test_a_template_with_another_extra_image_is_another_template():
    t = template.load()
    plain = t.content_hash("sha256:aa")
    assert t.content_hash("sha256:aa", ()) == plain  # no extra image: the hash templates had before
    one = t.content_hash("sha256:aa", ("sha256:r1",))
    assert len({plain, one, t.content_hash("sha256:aa", ("sha256:r2",))}) == 3
    assert t.content_hash("sha256:aa", ("sha256:r1", "sha256:r2")) == t.content_hash(
        "sha256:aa", ("sha256:r2", "sha256:r1")
    )


def test_extra_images_are_recorded_in_a_glance_property():
    from images.bake import BakeError, extra_images_property

    loaded = [{"archive": "r.tar", "image_id": "sha256:" + "5b" * 32, "tags": ["localhost/r:3.10"]}]
    assert extra_images_property(loaded) == "localhost/r:3.10@" + "5b" * 6
    with pytest.raises(BakeError, match="does not fit a Glance property"):
        extra_images_property(loaded * 10)


def test_fab_refuses_a_missing_extra_image_before_the_cloud(tmp_path):
    archive = _docker_archive(tmp_path / "w.tar", "sha256:ab")
    extra = _docker_archive(tmp_path / "r.tar", "sha256:cd")
    out = _fab(
        "bake-template",
        "--image-archive",
        str(archive),
        "--extra-image",
        str(extra),
        "--extra-image",
        str(tmp_path / "gone.tar"),
    )
    assert (
        out.returncode == 1
        and "extra image archive" in out.stderr
        and "gone.tar does not exist" in out.stderr
    ), out.stderr

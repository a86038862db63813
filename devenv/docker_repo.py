"""A local stand-in of Docker's apt repository (download.docker.com/linux/debian), on loopback.

`fab bake-template --docker-method docker-ce` adds Docker's repository to the builder: it fetches
the signing key from ``<repository>/gpg``, checks its fingerprint, writes a ``signed-by`` source
and installs ``docker-ce``, ``docker-ce-cli`` and ``containerd.io``. Docker's repository cannot be
reached from this machine, so this module builds one with the same layout and serves it:

    <url>/gpg                                        armored public signing key
    <url>/dists/<suite>/InRelease, Release, Release.gpg   signed with that key (GnuPG)
    <url>/dists/<suite>/stable/binary-<arch>/Packages[.gz]
    <url>/pool/stable/<arch>/<package>_<version>_all.deb

What differs from Docker's: ``docker-ce`` is Debian's ``docker.io`` package repacked under that
name (dpkg-deb; the same files, maintainer scripts and dependencies on Debian's containerd and
runc, without docker.io's Conflicts on docker-ce), so the engine installed is Debian's build, not
Docker Inc.'s; ``docker-ce-cli`` and ``containerd.io`` are metapackages (the CLI is in docker-ce,
containerd comes from Debian). The key is made per repository (ed25519), so ``fingerprint`` is
not Docker's; tests pass it to the template as a mirror that re-signs would.

    with DockerRepo(tmp_path, engine_deb=Path(".../docker.io_20.10.24..._amd64.deb")) as repo:
        repo.url, repo.fingerprint

Needs ``gpg`` and ``dpkg-deb`` (Debian: gnupg, dpkg).
"""

from __future__ import annotations

import email.utils
import functools
import gzip
import hashlib
import shutil
import subprocess
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = "5:27.5.1-1~debian.12~bookworm"  # the shape of Docker's versions; the epoch beats Debian's
COMPONENT = "stable"

# Docker's metapackages here -> what they depend on (docker-ce itself is the repacked engine).
METAPACKAGES = {
    "docker-ce-cli": "docker-ce",
    "containerd.io": "containerd (>= 1.4~)",
}
# Control fields of docker.io that do not carry over to the repacked docker-ce.
DROPPED_FIELDS = ("Conflicts", "Built-Using", "Source")


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


class DockerRepo:
    """Build the repository under ``root`` and serve it on 127.0.0.1 (``url``) while entered.

    ``sign(other)`` re-signs the Release files with another repository's key, unlike the one
    published at ``<url>/gpg``: a tampered mirror, which apt must refuse; ``sign()`` undoes it."""

    def __init__(
        self, root: Path, engine_deb: Path | None = None, suite: str = "bookworm", arch: str | None = None
    ):
        self.root = Path(root) / "linux" / "debian"
        self.engine_deb = Path(engine_deb) if engine_deb else None
        self.suite = suite
        self.arch = arch or _run("dpkg", "--print-architecture").stdout.strip()
        # A short home: gpg-agent's socket path must stay under the kernel's 108-byte limit.
        self.gnupg_home = Path(tempfile.mkdtemp(prefix="qw-gpg-"))
        self.fingerprint = self._make_key()
        self._httpd: ThreadingHTTPServer | None = None
        self.url = ""

    # -- building -----------------------------------------------------------------------------
    def _gpg(self, *args: str, home: Path | None = None) -> str:
        return _run("gpg", "--homedir", str(home or self.gnupg_home), "--batch", "--yes", *args).stdout

    def _make_key(self) -> str:
        self.gnupg_home.chmod(0o700)
        self._gpg(
            "--passphrase",
            "",
            "--quick-gen-key",
            "queue-workers docker-ce stand-in <standin@localhost>",
            "ed25519",
            "sign",
            "never",
        )
        colons = self._gpg("--with-colons", "--list-keys")
        return next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))

    def build(self) -> DockerRepo:
        pool = self.root / "pool" / COMPONENT / self.arch
        pool.mkdir(parents=True, exist_ok=True)
        if self.engine_deb is None or not self.engine_deb.is_file():
            raise FileNotFoundError(
                f"Debian's docker.io .deb to repack as docker-ce: {self.engine_deb} "
                "(devenv.builder.rootfs prefetches it into the builder rootfs's apt cache)"
            )
        stanzas = [self._repack_engine(pool)]
        stanzas += [self._metapackage(pool, name, depends) for name, depends in METAPACKAGES.items()]
        binary = self.root / "dists" / self.suite / COMPONENT / f"binary-{self.arch}"
        binary.mkdir(parents=True, exist_ok=True)
        packages = "\n".join(stanzas).encode()
        (binary / "Packages").write_bytes(packages)
        (binary / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
        self.sign()
        (self.root / "gpg").write_text(self._gpg("--armor", "--export", self.fingerprint))
        return self

    def _repack_engine(self, pool: Path) -> str:
        """docker.io's files and scripts as the package docker-ce."""
        with tempfile.TemporaryDirectory() as tmp:
            _run("dpkg-deb", "--raw-extract", str(self.engine_deb), tmp)
            control_file = Path(tmp) / "DEBIAN" / "control"
            fields = _parse_control(control_file.read_text())
            arch = fields["Architecture"]
            fields = {k: v for k, v in fields.items() if k not in DROPPED_FIELDS}
            fields.update(
                Package="docker-ce",
                Version=VERSION,
                Maintainer="queue-workers devenv <standin@localhost>",
                Description="stand-in for Docker's docker-ce\n"
                " Debian's docker.io repacked by devenv.docker_repo for tests.",
            )
            control_file.write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
            deb = pool / f"docker-ce_{VERSION.split(':', 1)[1]}_{arch}.deb"
            # Fast compression: the archive only travels over loopback.
            _run("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", tmp, str(deb))
        return self._stanza(deb)

    def _metapackage(self, pool: Path, name: str, depends: str) -> str:
        control = (
            f"Package: {name}\nVersion: {VERSION}\nArchitecture: all\n"
            f"Maintainer: queue-workers devenv <standin@localhost>\nDepends: {depends}\n"
            f"Description: stand-in for Docker's {name}\n"
            f" Depends on {depends}; built by devenv.docker_repo for tests.\n"
        )
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "DEBIAN").mkdir()
            (Path(tmp) / "DEBIAN" / "control").write_text(control)
            deb = pool / f"{name}_{VERSION.split(':', 1)[1]}_all.deb"
            _run("dpkg-deb", "--root-owner-group", "--build", tmp, str(deb))
        return self._stanza(deb)

    def _stanza(self, deb: Path) -> str:
        """The package's Packages-file entry: its control fields, where it is and its checksums."""
        fields = _parse_control(_run("dpkg-deb", "--field", str(deb)).stdout)
        data = deb.read_bytes()
        fields.update(
            {
                "Filename": str(deb.relative_to(self.root)),
                "Size": str(len(data)),
                "MD5sum": hashlib.md5(data).hexdigest(),
                "SHA256": hashlib.sha256(data).hexdigest(),
            }
        )
        description = fields.pop("Description")
        return "".join(f"{k}: {v}\n" for k, v in fields.items()) + f"Description: {description}\n"

    def sign(self, signer: DockerRepo | None = None) -> None:
        """Write dists/<suite>/Release and sign it (InRelease, Release.gpg) with ``signer``'s key
        (default: this repository's own, the one at ``<url>/gpg``)."""
        dist = self.root / "dists" / self.suite
        files = sorted(p for p in dist.rglob("*") if p.is_file() and p.parent != dist)
        sums = "".join(
            f" {hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_size:>8} {p.relative_to(dist)}\n"
            for p in files
        )
        release = (
            f"Origin: Docker\nLabel: Docker CE (queue-workers stand-in)\nSuite: {self.suite}\n"
            f"Codename: {self.suite}\nArchitectures: {self.arch}\nComponents: {COMPONENT}\n"
            f"Description: Docker CE packages for Debian {self.suite} (stand-in)\n"
            f"Date: {email.utils.formatdate(usegmt=True)}\nSHA256:\n{sums}"
        )
        (dist / "Release").write_text(release)
        signer = signer or self
        for out, mode in (("InRelease", "--clearsign"), ("Release.gpg", "--detach-sign")):
            self._gpg(
                "--local-user",
                signer.fingerprint,
                "--armor",
                mode,
                "--output",
                str(dist / out),
                str(dist / "Release"),
                home=signer.gnupg_home,
            )

    # -- serving ------------------------------------------------------------------------------
    def start(self) -> DockerRepo:
        if not (self.root / "gpg").exists():
            self.build()
        handler = functools.partial(_QuietHandler, directory=str(self.root.parent.parent))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/linux/debian"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        # Ends the gpg-agent this repository's GnuPG home started (and only that one).
        subprocess.run(
            ["gpgconf", "--homedir", str(self.gnupg_home), "--kill", "gpg-agent"], capture_output=True
        )
        shutil.rmtree(self.gnupg_home, ignore_errors=True)

    def __enter__(self) -> DockerRepo:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _parse_control(text: str) -> dict[str, str]:
    """A deb822 stanza as {field: value}, continuation lines kept (joined with newlines)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):  # apt's requests are not worth a line each
        pass

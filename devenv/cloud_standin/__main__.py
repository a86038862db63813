"""Run the cloud stand-in until Ctrl-C, with real builder hosts as its servers (needs root).

    python -m devenv.cloud_standin [--port P] [--clouds-yaml FILE]

Writes a clouds.yaml entry `standin` and prints the `fab bake-template` line that bakes against it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

import yaml

from devenv.builder.host import BuilderHost
from devenv.cloud_standin import CloudStandin


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m devenv.cloud_standin", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--clouds-yaml", type=Path, help="where to write clouds.yaml (default: a temporary file)")
    a = p.parse_args(argv)
    with CloudStandin(lambda pub, port: BuilderHost(authorized_key=pub, port=port), port=a.port) as cloud:
        path = a.clouds_yaml or Path(tempfile.mkdtemp(prefix="qw-standin-")) / "clouds.yaml"
        path.write_text(yaml.safe_dump({"clouds": {"standin": cloud.cloud_config()}}))
        print(f"cloud stand-in on {cloud.url} (Keystone {cloud.auth_url})")
        print(f"export OS_CLIENT_CONFIG_FILE={path}")
        print(f"fab bake-template --cloud standin --ssh-port {cloud.state.ssh_port}")
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

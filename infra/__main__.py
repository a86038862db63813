"""Entry point of both the Pulumi program (`pulumi up` runs this file) and `python -m infra`.

Under the Pulumi engine the runtime is configured with a resource monitor: the stack is
declared. Run by hand (`python -m infra render --stack iad`), it is the command line.
"""

import os
import sys

# `pulumi up` runs this file by path: make the project's packages importable however it is run.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pulumi.runtime import settings as _settings


def _under_engine() -> bool:
    return _settings.get_monitor() is not None


if _under_engine():
    from infra.program import declare

    declare()
elif __name__ == "__main__":
    from infra.cli import main

    sys.exit(main())

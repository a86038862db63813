"""What `pulumi up` loads: the Pulumi program does not pull in the bake's SSH and Fabric code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_program_imports_neither_fabric_nor_paramiko():
    code = (
        "import json, sys; import infra.program; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fabric', 'paramiko', 'invoke') or m in ('images.bake', 'images.steps', 'images.ssh'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []

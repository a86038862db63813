"""``python -m workload MODE``: see :mod:`workload.cli`."""

import sys

from workload.cli import main

sys.exit(main())

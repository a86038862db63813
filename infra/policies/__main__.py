"""The queue-workers policy pack. `pulumi preview --policy-pack infra/policies` runs this file.

Constructing the PolicyPack starts pulumi-policy's gRPC server, so nothing imports this module:
the rules live in ``rules.py``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pulumi_policy import EnforcementLevel, PolicyPack

from infra.policies.rules import POLICIES

PolicyPack(name="queue-workers", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)

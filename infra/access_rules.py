"""Keystone application-credential access rules for the consumers and the monitor. Pure.

Keystone checks every request of a rule-restricted credential against these (service type,
method, path; ``*`` matches one path segment, ``**`` the rest; query strings are ignored).
Refused calls get 401. Zaqar 23 has no policy of its own that stops a project member from
deleting queues, so these rules are what keeps a consumer to its own two queues.
"""

from __future__ import annotations

from infra.hot import SCALE_DOWN, SCALE_UP
from workload.autoscale.drain import DRAIN_KEY

MESSAGING, ORCHESTRATION, COMPUTE = "messaging", "orchestration", "compute"


def _rule(service: str, method: str, path: str) -> dict[str, str]:
    return {"service": service, "method": method, "path": path}


def consumer_rules(queue: str, dead_letter_queue: str) -> list[dict[str, str]]:
    """Post, claim, renew, release and delete messages on the queue and its dead-letter queue."""
    rules = []
    for q in (queue, dead_letter_queue):
        base = f"/v2/queues/{q}"
        rules += [
            _rule(MESSAGING, "POST", f"{base}/messages"),  # post (replies, dead-lettering by hand)
            _rule(MESSAGING, "POST", f"{base}/claims"),  # claim
            _rule(MESSAGING, "PATCH", f"{base}/claims/*"),  # renew
            _rule(MESSAGING, "DELETE", f"{base}/claims/*"),  # release
            _rule(MESSAGING, "DELETE", f"{base}/messages/*"),  # delete one handled message
        ]
    return rules


def monitor_rules(
    queue: str, dead_letter_queue: str, stack_name: str, drain: bool = True
) -> list[dict[str, str]]:
    """Read the two queues' stats; signal the group's policies and read or update its own stack;
    with ``drain`` (graceful scale-in, workload/autoscale/drain_heat.py) also what the drain
    protocol needs: the project's servers (status and metadata) and the one metadata key that asks a
    server to drain. Access rules match paths and the servers' ids exist only after the stack
    does, so ``GET /servers/detail`` lists every server of the project and the metadata rules
    match any server's, but only the one key, ``qw_drain``.
    """
    stack = f"/v1/*/stacks/{stack_name}"
    rules = [
        _rule(MESSAGING, "GET", f"/v2/queues/{queue}/stats"),
        _rule(MESSAGING, "GET", f"/v2/queues/{dead_letter_queue}/stats"),
        _rule(ORCHESTRATION, "POST", f"{stack}/*/resources/{SCALE_UP}/signal"),
        _rule(ORCHESTRATION, "POST", f"{stack}/*/resources/{SCALE_DOWN}/signal"),
        _rule(ORCHESTRATION, "GET", stack),  # lookup by name (redirects to name/id)
        _rule(ORCHESTRATION, "GET", f"{stack}/**"),  # status, outputs, resources of this stack only
        _rule(ORCHESTRATION, "PATCH", f"{stack}/*"),  # set the desired-capacity parameter
    ]
    if drain:
        rules += [
            _rule(COMPUTE, "GET", "/v2.1/servers/detail"),  # the members' status and drain metadata
            _rule(COMPUTE, "PUT", f"/v2.1/servers/*/metadata/{DRAIN_KEY}"),  # ask a member to drain
            _rule(COMPUTE, "DELETE", f"/v2.1/servers/*/metadata/{DRAIN_KEY}"),  # call a drain off
        ]
    return rules

"""Graceful scale-in for the Heat actuator: drain the members that will leave, then remove
exactly those (the protocol and its rules: :mod:`workload.autoscale.drain`).

:class:`DrainingActuator` wraps a :class:`~workload.autoscale.heat.HeatActuator`. Its state
lives in the cloud, not in the monitor: a member is draining while its server carries the
metadata key ``qw_drain`` (whose value is the deadline), so a restarted monitor carries on where
the last one stopped. Each look:

- ``observe`` reads the group's members (the nested stack's resources) and their servers
  (Nova's status and metadata), removes the drains that are done or past their deadline, and
  reports the members still draining as ``leaving`` (``current`` counts the others: the policy
  sees the capacity that will stay), stranded members among them (a server that powered off or
  failed with no drain asked: :func:`~workload.autoscale.drain.stranded`);
- ``apply`` with fewer members than stay asks that many more to drain; with more, it calls off
  the drains not yet done (newest first) and only then grows the group.

Nova calls (the monitor's access rules allow exactly these): ``GET /servers/detail`` and
``PUT`` / ``DELETE /servers/{id}/metadata/qw_drain``. Heat calls: the stack's resources with
``nested_depth=1``, then the Heat actuator's own resize.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from workload.autoscale import drain
from workload.autoscale.actuator import Actuator, ActuatorError, ApplyResult, GroupState
from workload.autoscale.heat import HeatActuator, _message

DEFAULT_DEADLINE_S = 600.0


class DrainingActuator(Actuator):
    """A Heat actuator whose scale-in never kills work that can finish within ``deadline_s``.

    :param heat: the Heat actuator of the group; its mode (signal, alarm or patch) resizes the
        group once members have drained, and each removes the oldest, the ones drained
    :param deadline_s: how long a member may take to drain before it is removed anyway
    :param clock: wall-clock seconds (the deadline is read by the servers too)
    :param log: called with a dict for every drain asked, called off, finished or timed out
    """

    def __init__(
        self,
        heat: HeatActuator,
        *,
        deadline_s: float = DEFAULT_DEADLINE_S,
        interface: str = "public",
        region_name: str | None = None,
        clock: Callable[[], float] = time.time,
        log: Callable[[dict[str, Any]], None] | None = None,
    ):
        from keystoneauth1 import adapter

        if not deadline_s > 0:
            raise ActuatorError(f"drain deadline={deadline_s!r} is not allowed: seconds above 0")
        self.heat = heat
        self.deadline_s = deadline_s
        self._clock = clock
        self._log = log or (lambda record: None)
        self._compute = adapter.Adapter(
            heat._session, service_type="compute", interface=interface, region_name=region_name
        )

    # --- the Actuator interface --------------------------------------------------------------
    def observe(self) -> GroupState:
        state = self.heat.observe()
        members, drains = self._look()
        if drains and not state.updating:
            removed = self._remove_finished(members, drains)
            if removed:
                state = self.heat.observe()
                members, drains = self._look()
        return dataclasses.replace(state, current=state.current - len(drains), leaving=len(drains))

    def apply(self, desired: int, reason: str) -> ApplyResult:
        state = self.heat.observe()
        members, drains = self._look()
        stay = state.current - len(drains)
        if state.updating:
            return ApplyResult(desired, stay, stay, "stack or group update in progress; nothing sent")
        low = state.min_size or 0
        if desired < stay:
            target = max(desired, low)
            leavers = drain.choose_leavers(members, stay - target, leaving=[d.member for d in drains])
            deadline = self._clock() + self.deadline_s
            for m in leavers:
                self._set_drain(m, deadline)
            names = ", ".join(m.name for m in leavers) or "none"
            return ApplyResult(
                desired,
                stay,
                stay - len(leavers),
                f"asked {len(leavers)} to drain ({names}) by {deadline:.0f}",
            )
        if desired > stay:
            called_off = drain.to_cancel(drains, members, desired - stay)
            for d in called_off:
                self._cancel_drain(d)
            kept = stay + len(called_off)
            note = f"called off {len(called_off)} drain(s)" if called_off else ""
            if desired <= kept:
                return ApplyResult(desired, stay, kept, note)
            still_leaving = len(drains) - len(called_off)
            grown = self.heat.apply(desired + still_leaving, reason)
            detail = "; ".join(x for x in (note, grown.detail) if x)
            return ApplyResult(desired, stay, grown.after - still_leaving, detail)
        return ApplyResult(desired, stay, stay, "already at the requested size")

    # --- reading the group ---------------------------------------------------------------------
    def _look(self) -> tuple[list[drain.Member], list[drain.Drain]]:
        """The members (Heat's view joined with Nova's) and the drains asked of them."""
        resources = self.heat._request(
            "GET", f"{self.heat._path}/resources", params={"nested_depth": 1}, what="the group's members"
        )["resources"]
        servers = self._servers()
        members, drains = [], []
        for r in resources:
            if r.get("parent_resource") != self.heat.group:
                continue
            server_id = r.get("physical_resource_id") or None
            server = servers.get(server_id) if server_id else None
            status = server["status"] if server else ("DELETED" if server_id else None)
            members.append(
                drain.Member(
                    r["resource_name"], r["resource_status"], r.get("creation_time") or "", server_id, status
                )
            )
            meta = (server or {}).get("metadata") or {}
            if drain.DRAIN_KEY in meta:
                deadline = _float(meta[drain.DRAIN_KEY])
                drains.append(
                    drain.Drain(r["resource_name"], server_id, deadline - self.deadline_s, deadline)
                )
        return members, drains + drain.stranded(members, drains, self._clock())

    def _servers(self) -> dict[str, dict]:
        resp = self._compute.get("/servers/detail", raise_exc=False)
        if resp.status_code >= 400:
            raise ActuatorError(f"Nova GET servers: HTTP {resp.status_code}: {_message(resp)}")
        return {s["id"]: s for s in resp.json().get("servers", [])}

    # --- asking and calling off ------------------------------------------------------------------
    def _set_drain(self, member: drain.Member, deadline: float) -> None:
        if member.server_id is None:
            return  # not created yet: nothing to drain, Heat's removal is harmless
        self._nova(
            "PUT",
            f"/servers/{member.server_id}/metadata/{drain.DRAIN_KEY}",
            json={"meta": {drain.DRAIN_KEY: f"{deadline:.0f}"}},
        )
        self._log(
            {"event": "drain", "member": member.name, "server": member.server_id, "deadline": round(deadline)}
        )

    def _cancel_drain(self, d: drain.Drain) -> None:
        self._nova("DELETE", f"/servers/{d.server_id}/metadata/{drain.DRAIN_KEY}", ok=(404,))
        self._log({"event": "drain-called-off", "member": d.member, "server": d.server_id})

    def _nova(self, method: str, path: str, ok: tuple[int, ...] = (), **kw) -> None:
        resp = self._compute.request(path, method, raise_exc=False, **kw)
        if resp.status_code >= 400 and resp.status_code not in ok:
            raise ActuatorError(f"Nova {method} {path}: HTTP {resp.status_code}: {_message(resp)}")

    # --- removing --------------------------------------------------------------------------------
    def _remove_finished(self, members: list[drain.Member], drains: list[drain.Drain]) -> bool:
        ready, late = drain.removable(drains, members, self._clock())
        if not (ready or late):
            return False
        for d in late:
            self._log(
                {
                    "event": "drain-timeout",
                    "member": d.member,
                    "server": d.server_id,
                    "note": "removed at the deadline: its claims expire and its messages are handled again",
                }
            )
        names = [d.member for d in ready + late]
        present = drain.healthy(members)
        going = [m.name for m in present if m.name in names]
        # A resize removes the head of Heat's order, which removable() made the drained ones
        # (down to zero too: the Heat actuator's patch-to-1-then-signal path).
        result = self.heat.apply(len(present) - len(going), "drained") if going else None
        status = {m.name: m.server_status for m in members}
        self._log(
            {
                "event": "drained-removed",
                "members": names,
                "server_status": {n: status.get(n, "gone") for n in names},
                "timed_out": [d.member for d in late],
                "unasked": [d.member for d in ready if not d.asked],
                "detail": result.detail if result else "gone",
            }
        )
        return True


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0

"""How a desired size reaches the group: at once, or the way the Heat actuator gets it there.

``direct``
    The size changes at once and the monitor is told how many servers are booting (what the
    local actuator reports). Scale-in takes idle servers first, stops them at once.

``signal`` (Heat, ``--heat-mode signal``)
    ``workload/autoscale/heat.py`` POSTs the scale-up or scale-down ScalingPolicy's signal once
    per step until the size is reached or Heat ignores one. Heat keeps one cooldown per group,
    shared by both policies, started by every resize (a clamped signal starts none), and ignores
    every signal inside it (measured on the local Heat 27; README, "The monitor"). So a resize
    moves by one policy step (``scaleUpStep`` / ``scaleDownStep``) and then nothing moves for
    that policy's cooldown (``scaleUpCooldown`` / ``scaleDownCooldown``).

``patch`` (Heat, ``--heat-mode patch``)
    The actuator PATCHes the desired-capacity parameter and waits for UPDATE_COMPLETE: the size
    changes at once (new servers cost and boot from then) but the monitor takes no action while
    the stack updates (``update_s``). The update starts the group's cooldown (``cooldown`` of the
    group = ``scaleUpCooldown``) after it ends. Heat 27 reads a desired capacity of 0 as "not
    given", so the actuator PATCHes to 1 and sends the last server away with a scale-down
    signal, which Heat honours only outside the cooldown.

With Heat the monitor sees the group's size only (the Heat actuator reports no booting count),
Heat removes the oldest members first, and a removed server leaves by the scale-in protocol
(README, "Scale-in on Heat"; :class:`bench.sim.ScaleIn`):

drain on (the monitor's default)
    The member is asked to drain: it claims nothing more, finishes the message it holds (the
    simulation knows its remaining service time), and its server powers itself off; it costs
    until Nova shows it SHUTOFF, ``power_off_s`` after its last message. On the local cloud that
    is within 3 s (``devenv/cloud.py`` sets Nova's ``sync_power_state_interval = 3``; on a real
    cloud libvirt's lifecycle events report the power-off at once).
drain off (``--no-drain``)
    Nova deletes the server at once (a hard power-off: ``nova/compute/manager.py``
    ``_shutdown_instance``); it costs ``power_off_s`` more, and the message it held is lost
    mid-way: it comes back when its claim lapses, the stack's ``claimTtl`` later (the consumer
    renews its claims while a handler runs, so a dead consumer's claim lapses at most that long
    after), and is done again from the start: a redelivery.

The example stacks (``Pulumi.iad.yaml``, ``Pulumi.dfw.yaml`` at the repository's root) give the
steps and cooldowns; keys they leave out take the Pulumi program's defaults.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from bench.sim import Fleet, ScaleIn
from workload.error_text import not_allowed

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("iad", "dfw")
MODES = ("direct", "signal", "patch")
STACK_KEYS = ("scaleUpStep", "scaleDownStep", "scaleUpCooldown", "scaleDownCooldown", "claimTtl")
HEAT_UPDATE_S = 30.0  # a stack update's duration: 5-12 s measured on the local Heat (fake servers)
POWER_OFF_S = 3.0  # last message done (or delete) to SHUTOFF: Nova's power-state sync on the local cloud


@dataclasses.dataclass(frozen=True)
class StackValues:
    """The scaling values of one example stack."""

    name: str
    up_step: int
    down_step: int
    up_cooldown_s: float
    down_cooldown_s: float
    claim_ttl_s: float = 300.0


def load_stack(name: str, root: Path = ROOT) -> StackValues:
    """Read ``Pulumi.<name>.yaml``'s steps, cooldowns and claim TTL (the Pulumi program's
    defaults, ``infra/config.py``, for keys it leaves out)."""
    from infra.config import SETTINGS

    path = root / f"Pulumi.{name}.yaml"
    try:
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"stack {name!r}: cannot read {path.name}: {e}") from None
    v = {k: config.get(f"queue-workers:{k}", SETTINGS[k].default) for k in STACK_KEYS}
    return StackValues(
        name,
        int(v["scaleUpStep"]),
        int(v["scaleDownStep"]),
        float(v["scaleUpCooldown"]),
        float(v["scaleDownCooldown"]),
        float(v["claimTtl"]),
    )


def scale_in(stack: StackValues, drain: bool, power_off_s: float) -> ScaleIn:
    """How a member Heat removes leaves: drained, or deleted with its message lost."""
    return ScaleIn(drain=drain, power_off_s=power_off_s, claim_ttl_s=stack.claim_ttl_s)


class Direct:
    """The size changes at once; booting servers are reported."""

    name = "direct"
    reports_booting = True

    def apply(self, fleet: Fleet, desired: int | None, t: float) -> None:
        if desired is not None:
            fleet.resize(desired, t)


class HeatSignal:
    """One policy step per resize, then the group's cooldown (see the module docstring)."""

    reports_booting = False

    def __init__(self, stack: StackValues, *, drain: bool = True, power_off_s: float = POWER_OFF_S):
        self.stack, self.scale_in = stack, scale_in(stack, drain, power_off_s)
        self.name = f"signal-{stack.name}"
        self.cooldown_until = -float("inf")

    def apply(self, fleet: Fleet, desired: int | None, t: float) -> None:
        cur = fleet.size
        if desired is None or desired == cur or t < self.cooldown_until:
            return
        up = desired > cur
        new = cur + self.stack.up_step if up else cur - self.stack.down_step
        new = max(0, min(fleet.max_servers, new))
        if new == cur:
            return  # clamped at the group's bound: Heat starts no cooldown
        fleet.resize(new, t, oldest_first=True, scale_in=self.scale_in)
        self.cooldown_until = t + (self.stack.up_cooldown_s if up else self.stack.down_cooldown_s)


class HeatPatch:
    """A stack update per resize; no action while it runs; zero through a signal."""

    reports_booting = False

    def __init__(
        self,
        stack: StackValues,
        update_s: float = HEAT_UPDATE_S,
        *,
        drain: bool = True,
        power_off_s: float = POWER_OFF_S,
    ):
        self.stack, self.update_s = stack, update_s
        self.scale_in = scale_in(stack, drain, power_off_s)
        self.name = f"patch-{stack.name}"
        self.updating_until = -float("inf")
        self.cooldown_until = -float("inf")

    def apply(self, fleet: Fleet, desired: int | None, t: float) -> None:
        cur = fleet.size
        if desired is None or desired == cur or t < self.updating_until:
            return
        if desired == 0 and cur == 1:
            if t >= self.cooldown_until:  # the last server goes by the scale-down signal
                fleet.resize(0, t, oldest_first=True, scale_in=self.scale_in)
                self.cooldown_until = t + self.stack.down_cooldown_s
            return
        fleet.resize(max(1, desired), t, oldest_first=True, scale_in=self.scale_in)
        self.updating_until = t + self.update_s
        self.cooldown_until = self.updating_until + self.stack.up_cooldown_s


def make_actuator(
    spec: str, *, update_s: float = HEAT_UPDATE_S, drain: bool = True, power_off_s: float = POWER_OFF_S
):
    """``direct``, or ``signal``/``patch`` with a stack: ``signal-iad``, ``patch-dfw``, ...
    (``drain`` and ``power_off_s``: how Heat's scale-in goes; direct always stops gracefully)."""
    if spec == "direct":
        return Direct()
    mode, _, stack = spec.partition("-")
    if mode not in ("signal", "patch") or stack not in STACKS:
        allowed = ", ".join(["direct"] + [f"{m}-{s}" for m in ("signal", "patch") for s in STACKS])
        raise ValueError(not_allowed("--actuator", spec, f"one of {allowed}"))
    values = load_stack(stack)
    if mode == "signal":
        return HeatSignal(values, drain=drain, power_off_s=power_off_s)
    return HeatPatch(values, update_s, drain=drain, power_off_s=power_off_s)


ACTUATOR_SPECS = ("direct",) + tuple(f"{m}-{s}" for m in ("signal", "patch") for s in STACKS)

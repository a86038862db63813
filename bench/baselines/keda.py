"""KEDA's queue scaler feeding the Kubernetes HPA, with every default as documented.

KEDA (ScaledObject spec, https://keda.sh/docs/latest/reference/scaledobject-spec/, and "Scaling
Deployments", https://keda.sh/docs/latest/concepts/scaling-deployments/):

* the trigger's metric is the queue's messages, in flight included (the queue scalers'
  ``scaleOnInFlight`` default), with target ``queueLength`` per replica (the knob we sweep);
* ``useCachedMetrics`` defaults to false: each HPA request makes KEDA's metrics server read the
  queue afresh, so the HPA sees a fresh value at every sync. ``pollingInterval`` (30 s) is how
  often the KEDA operator checks the trigger for the 0 <-> 1 decision only;
* ``activationQueueLength`` 0: the trigger is active when the metric is above 0; at 0 replicas
  an active trigger scales to 1 (minReplicaCount 0); ``cooldownPeriod`` (300 s) after the last
  active check, the deployment goes back to 0. Between 1 and N the HPA decides.

The HPA (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/, algorithm
details and the default behaviour):

* every 15 s (``--horizontal-pod-autoscaler-sync-period``) it computes, for an external metric
  with an AverageValue target, ``ratio = metric / (target x current replicas)``; within the
  0.1 tolerance (``|ratio - 1| <= 0.1``) nothing changes, else the recommendation is
  ``ceil(metric / target)``, within min (1) and max replicas; the HPA does nothing at 0;
* default scale-up: no stabilisation, at most ``max(4 pods, 100 %)`` added per 15 s;
* default scale-down: the highest recommendation of the last 300 s (stabilisation window), then
  up to 100 % removed per 15 s.
"""
from __future__ import annotations

import math

from workload.autoscale.policy import Observation

from bench.baselines.knobs import PerServerTarget, backlog_grid
from bench.worlds import World

KNOB = "queueLength"
SYNC_S = 15.0
POLLING_INTERVAL_S = 30.0
COOLDOWN_PERIOD_S = 300.0
ACTIVATION_QUEUE_LENGTH = 0
TOLERANCE = 0.1
SCALE_UP_PODS, SCALE_UP_PERCENT = 4, 100
SCALE_DOWN_STABILISATION_S = 300.0


sweep = backlog_grid  # the values swept


class Keda(PerServerTarget):
    """KEDA + HPA with ``queueLength`` messages per replica (see the module docstring)."""

    KNOB = KNOB
    name = "keda"
    poll_s = SYNC_S

    def __init__(self, queue_length: float, world: World):
        super().__init__(queue_length, world)
        self.recommendations: list[tuple[float, int]] = []
        self.last_poll = -math.inf
        self.last_active: float | None = None

    def decide(self, obs: Observation) -> int:
        t, cur, metric = obs.now, obs.current, obs.stats.total
        if self.last_active is None:
            self.last_active = t
        if t - self.last_poll >= POLLING_INTERVAL_S - 1e-9:  # the KEDA operator's check
            self.last_poll = t
            active = metric > ACTIVATION_QUEUE_LENGTH
            if active:
                self.last_active = t
            if cur == 0:
                return 1 if active else 0
            if not active and t - self.last_active >= COOLDOWN_PERIOD_S:
                self.recommendations.clear()
                return 0
        if cur == 0:
            return 0  # the HPA does not scale a deployment at 0 replicas
        return self.hpa(t, cur, metric)

    def hpa(self, t: float, cur: int, metric: float) -> int:
        """One HPA sync: tolerance, recommendation, stabilisation, rate limit."""
        ratio = metric / (self.target * cur)
        rec = cur if abs(ratio - 1) <= TOLERANCE else math.ceil(metric / self.target - 1e-9)
        rec = max(1, min(self.max_size, rec))
        window = [(tt, n) for tt, n in self.recommendations if t - tt < SCALE_DOWN_STABILISATION_S]
        self.recommendations = window + [(t, rec)]
        if rec > cur:
            return min(rec, cur + max(SCALE_UP_PODS, cur * SCALE_UP_PERCENT // 100))
        return min(cur, max(n for _, n in self.recommendations))

    def params(self) -> dict:
        return {KNOB: self.target, "scaleOnInFlight": True, "useCachedMetrics": False,
                "hpa_sync_s": SYNC_S, "pollingInterval_s": POLLING_INTERVAL_S,
                "tolerance": TOLERANCE, "scaleUp": "max(4 pods, 100%) per 15 s",
                "scaleDown_stabilizationWindowSeconds": SCALE_DOWN_STABILISATION_S,
                "minReplicaCount": 0, "activationQueueLength": ACTIVATION_QUEUE_LENGTH,
                "cooldownPeriod_s": COOLDOWN_PERIOD_S}

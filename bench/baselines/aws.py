"""AWS target tracking on the queue's backlog per instance, as the documentation describes it.

Sources: EC2 Auto Scaling, "Scaling policy based on Amazon SQS"
(https://docs.aws.amazon.com/autoscaling/ec2/userguide/as-using-sqs-queue.html): the metric is
the backlog per instance, ApproximateNumberOfMessagesVisible / InService instances (messages in
flight are not visible), and the target is the acceptable backlog per instance (acceptable
latency / average processing time; the knob we sweep). "How target tracking scaling works"
(https://docs.aws.amazon.com/autoscaling/application/userguide/target-tracking-scaling-policy-overview.html)
and the alarms it creates: a 1-minute metric; the scale-out alarm fires when 3 of 3 datapoints
are above the target, the scale-in alarm when 15 of 15 are below 90 % of it; capacity is set in
proportion to the metric (``ceil(instances x metric / target)``). CloudWatch keeps invoking an
Auto Scaling action once a minute while its alarm stays in ALARM
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html).
Instance warm-up (https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-default-instance-warmup.html):
set to the boot time, as recommended; a warming instance counts toward the current capacity when
a scale-out is computed (no capacity added twice) and blocks scale-in until it is warm. The metric
here divides by the warm instances only: metric math over GroupInServiceInstances would divide by
the booting ones too, which only lowers the metric and delays the alarms (we favour AWS). EC2 Auto Scaling target tracking uses no cooldown (the scale-in /
scale-out cooldowns are "not used if the scalable resource is an Auto Scaling group") and no
rate limit beyond the alarms. Minimum capacity 1: with none InService the metric divides by 0.
"""
from __future__ import annotations

import math

from workload.autoscale.policy import Observation

from bench.baselines.knobs import PerServerTarget, backlog_grid
from bench.worlds import World

KNOB = "target_backlog_per_instance"
PERIOD_S = 60.0
OUT_DATAPOINTS, IN_DATAPOINTS, IN_BELOW = 3, 15, 0.9
MIN_CAPACITY = 1


sweep = backlog_grid  # the values swept


class Aws(PerServerTarget):
    """Target tracking with ``target`` visible messages per InService instance."""

    KNOB = KNOB
    name = "aws"
    poll_s = PERIOD_S

    def __init__(self, target: float, world: World):
        super().__init__(target, world)
        self.warmup_s = world.boot_s  # the instance warm-up, set to the boot time as recommended
        self.datapoints: list[float] = []
        self.launched: list[float] = []  # launch times of instances still warming up

    def decide(self, obs: Observation) -> int:
        t, cur = obs.now, obs.current
        self.launched = [x for x in self.launched if t - x < self.warmup_s][-cur:] if cur else []
        warming = len(self.launched)
        in_service = cur - warming
        if in_service > 0:
            self.datapoints = (self.datapoints + [obs.stats.free / in_service])[-IN_DATAPOINTS:]
        else:
            self.datapoints = []  # no data: the alarms are in INSUFFICIENT_DATA
        want = max(MIN_CAPACITY, min(self.max_size, math.ceil(obs.stats.free / self.target - 1e-9)))
        desired = max(MIN_CAPACITY, cur)
        last = self.datapoints[-OUT_DATAPOINTS:]
        if len(last) == OUT_DATAPOINTS and all(m > self.target for m in last):
            desired = max(cur, want)  # warming instances already count in cur
        elif (len(self.datapoints) == IN_DATAPOINTS and not warming
              and all(m < IN_BELOW * self.target for m in self.datapoints)):
            desired = min(cur, want)
        if desired > cur:
            self.launched += [t] * (desired - cur)
        return desired

    def params(self) -> dict:
        return {KNOB: self.target, "metric_period_s": PERIOD_S, "scale_out": "3 of 3 datapoints > target",
                "scale_in": "15 of 15 datapoints < 0.9 x target", "instance_warmup_s": self.warmup_s,
                "min_capacity": MIN_CAPACITY}

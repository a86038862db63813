"""The Heat actuator: an ``OS::Heat::AutoScalingGroup`` in a stack, resized three ways.

* ``signal``: POST the scale-up or scale-down ``OS::Heat::ScalingPolicy``'s signal URL with the
  session's token, once per step;
* ``alarm``: POST the policy's pre-signed ``alarm_url`` (CloudFormation API, no token), which is
  what an alarm service would call;
* ``patch``: PATCH the stack's desired-capacity parameter and wait for UPDATE_COMPLETE.

Heat resizes asynchronously and hides its cooldown and min/max clamping from the caller (a
signal answers 200 whatever happens), so every ``apply`` reads the group's size back from the
stack's size output, and ``observe`` reports ``updating`` while the stack or the group is busy.

The stack's template tells the actuator everything else: the group and its min/max (literal or
``get_param``), the two policies (by the sign of their ``scaling_adjustment``) and the parameter
behind ``desired_capacity``. Any of them can be named explicitly instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import email.utils
import time
from collections.abc import Callable
from typing import Any

from workload import settings
from workload.autoscale.actuator import Actuator, ActuatorError, ApplyResult, GroupState
from workload.settings import setting

MODES = ("signal", "alarm", "patch")
GROUP_TYPES = ("OS::Heat::AutoScalingGroup",)
POLICY_TYPE = "OS::Heat::ScalingPolicy"
DEFAULT_SIZE_OUTPUT = "current_size"


@dataclasses.dataclass(frozen=True)
class HeatOptions:
    """The Heat actuator's options (``--actuator heat``), each declared once (workload/settings.py)."""

    stack: str | None = setting(
        None,
        "name or id of the Heat stack holding the scaling group",
        flags=("--stack",),
        env=("QW_STACK",),
        optional=True,
    )
    heat_mode: str = setting(
        "signal",
        "signal: POST the scaling policies' signal URLs with a token; "
        "alarm: POST their pre-signed alarm_url; patch: PATCH the stack's "
        "desired-capacity parameter and wait for UPDATE_COMPLETE",
        flags=("--heat-mode",),
        env=("QW_HEAT_MODE",),
        choices=MODES,
    )
    heat_size_output: str = setting(
        DEFAULT_SIZE_OUTPUT,
        "stack output holding the group's current size",
        flags=("--heat-size-output",),
        env=("QW_HEAT_SIZE_OUTPUT",),
        metavar="OUTPUT",
    )
    # The stack's resources: each found in its template when not given.
    heat_group: str | None = setting(
        None,
        "AutoScalingGroup resource name (default: the only one in the stack)",
        flags=("--heat-group",),
        env=("QW_HEAT_GROUP",),
        optional=True,
        metavar="RESOURCE",
    )
    heat_up_policy: str | None = setting(
        None,
        "scale-up ScalingPolicy (default: the one with a positive adjustment)",
        flags=("--heat-up-policy",),
        env=("QW_HEAT_UP_POLICY",),
        optional=True,
        metavar="RESOURCE",
    )
    heat_down_policy: str | None = setting(
        None,
        "scale-down ScalingPolicy (default: the one with a negative adjustment)",
        flags=("--heat-down-policy",),
        env=("QW_HEAT_DOWN_POLICY",),
        optional=True,
        metavar="RESOURCE",
    )
    heat_desired_parameter: str | None = setting(
        None,
        "stack parameter behind the group's desired_capacity, for --heat-mode "
        "patch (default: read from the template)",
        flags=("--heat-desired-parameter",),
        env=("QW_HEAT_DESIRED_PARAMETER",),
        optional=True,
        metavar="PARAM",
    )
    heat_timeout: float = setting(
        300.0,
        "longest wait for a stack update or a resize",
        flags=("--heat-timeout",),
        env=("QW_HEAT_TIMEOUT",),
        kind=float,
        lo=1,
        hi=86400,
        metavar="SECONDS",
    )


class HeatActuator(Actuator):
    """Reads and resizes one AutoScalingGroup of one Heat stack.

    :param session: a keystoneauth session (e.g. ``openstack.config`` ``get_one(cloud).get_session()``)
    :param stack: the stack's name or id
    :param mode: ``signal``, ``alarm`` or ``patch`` (see the module docstring)
    :param size_output: stack output holding the group's ``current_size``
    :param group: the group's resource name (default: the only AutoScalingGroup in the template)
    :param up_policy / down_policy: ScalingPolicy resource names (default: found by the sign of
        ``scaling_adjustment``)
    :param desired_parameter: stack parameter for ``patch`` (default: the group's
        ``desired_capacity: {get_param: ...}``)
    :param settle_timeout: seconds to wait for a signalled resize to show in the size output
    :param quiet_wait: seconds to wait when Heat's own metadata says it will ignore the signal
        (cooldown running, scaling in progress, or already at the bound)
    :param update_timeout: seconds to wait for a PATCH to reach UPDATE_COMPLETE
    """

    def __init__(
        self,
        session,
        stack: str,
        *,
        mode: str = "signal",
        size_output: str = DEFAULT_SIZE_OUTPUT,
        group: str | None = None,
        up_policy: str | None = None,
        down_policy: str | None = None,
        desired_parameter: str | None = None,
        interface: str = "public",
        region_name: str | None = None,
        settle_timeout: float = 30.0,
        quiet_wait: float = 3.0,
        update_timeout: float = 300.0,
        poll_interval: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if mode not in MODES:
            raise ActuatorError(f"heat mode {mode!r} is not one of {', '.join(MODES)}")
        from keystoneauth1 import adapter

        self.mode = mode
        self.size_output = size_output
        self.settle_timeout = settle_timeout
        self.quiet_wait = quiet_wait
        self.update_timeout = update_timeout
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._session = session
        self._api = adapter.Adapter(
            session, service_type="orchestration", interface=interface, region_name=region_name
        )
        stack_body = self._request(
            "GET", f"/stacks/{stack}", params={"resolve_outputs": False}, what=f"stack {stack!r}"
        )["stack"]
        self.stack_name = stack_body["stack_name"]
        self.stack_id = stack_body["id"]
        self._path = f"/stacks/{self.stack_name}/{self.stack_id}"
        self._template = self._request("GET", f"{self._path}/template", what="the stack's template")
        self._find_resources(stack_body, group, up_policy, down_policy, desired_parameter)
        self._alarm_urls: dict[str, str] = {}
        self._last_size: int | None = None

    def _find_resources(
        self,
        stack_body: dict,
        group: str | None,
        up_policy: str | None,
        down_policy: str | None,
        desired_parameter: str | None,
    ) -> None:
        """The group, its scaling policies and its desired-capacity parameter in the stack's
        template (the names given win); :class:`ActuatorError` if the mode lacks what it needs."""
        mode = self.mode
        resources = self._template.get("resources") or {}
        self.group = group or self._only(resources, GROUP_TYPES, "an OS::Heat::AutoScalingGroup")
        if resources.get(self.group, {}).get("type") not in GROUP_TYPES:
            raise ActuatorError(
                f"stack {self.stack_name}: resource {self.group!r} is not an "
                f"AutoScalingGroup (found: {self._names(resources, GROUP_TYPES)})"
            )
        self.up_policy = up_policy or self._policy(resources, stack_body, +1)
        self.down_policy = down_policy or self._policy(resources, stack_body, -1)
        group_props = resources[self.group].get("properties") or {}
        self.desired_parameter = desired_parameter or _param_name(group_props.get("desired_capacity"))
        if mode == "patch" and not self.desired_parameter:
            raise ActuatorError(
                f"stack {self.stack_name}: mode patch needs a stack parameter for "
                f"the group's desired_capacity (give desired_parameter)"
            )
        if mode in ("signal", "alarm") and not (self.up_policy and self.down_policy):
            raise ActuatorError(
                f"stack {self.stack_name}: mode {mode} needs a scale-up and a "
                f"scale-down {POLICY_TYPE} (found: "
                f"{self._names(resources, (POLICY_TYPE,)) or 'none'})"
            )

    # --- construction from the monitor's command line ------------------------------------------
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add the ``--stack``, ``--heat-mode`` ... options (:class:`HeatOptions`) that
        :meth:`from_args` reads."""
        settings.add_options(parser.add_argument_group("Heat actuator (--actuator heat)"), HeatOptions)

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, session=None, sleep: Callable[[float], None] = time.sleep
    ) -> HeatActuator:
        """Build from :meth:`add_arguments`' options; the session comes from clouds.yaml / OS_CLOUD.

        ``args.os_cloud`` (if the CLI has it) names the cloud; otherwise openstacksdk's usual
        lookup applies (``OS_CLOUD``, ``OS_*`` variables, clouds.yaml).
        """
        o: HeatOptions = settings.from_args(HeatOptions, args)  # what args lacks: the defaults
        if not o.stack:
            raise ActuatorError("--actuator heat needs --stack NAME_OR_ID")
        if session is None:
            session = session_from_cloud(getattr(args, "os_cloud", None), getattr(args, "region", None))
        return cls(
            session,
            o.stack,
            mode=o.heat_mode,
            size_output=o.heat_size_output,
            group=o.heat_group,
            up_policy=o.heat_up_policy,
            down_policy=o.heat_down_policy,
            desired_parameter=o.heat_desired_parameter,
            settle_timeout=min(o.heat_timeout, 60.0),
            update_timeout=o.heat_timeout,
            sleep=sleep,
        )

    # --- the Actuator interface ----------------------------------------------------------------
    def observe(self) -> GroupState:
        stack = self._stack()
        status = stack["stack_status"]
        meta = self._group_metadata()
        updating = status.endswith("_IN_PROGRESS") or bool(meta.get("scaling_in_progress"))
        if status.startswith("DELETE") or (status.endswith("_FAILED") and status.startswith("CREATE")):
            raise ActuatorError(
                f"stack {self.stack_name} is {status}: {stack.get('stack_status_reason', '')}"
            )
        size = self._size(allow_stale=updating)
        low, high = self._bounds(stack)
        return GroupState(current=size, booting=0, updating=updating, min_size=low, max_size=high)

    def apply(self, desired: int, reason: str) -> ApplyResult:
        state = self.observe()
        before = state.current
        if state.updating:
            return ApplyResult(desired, before, before, "stack or group update in progress; nothing sent")
        if desired == before:
            return ApplyResult(desired, before, before, "already at the requested size")
        if self.mode == "patch":
            # Heat refuses (400) a desired_capacity outside min/max; signals are clamped by Heat.
            target = _clamp(desired, state.min_size, state.max_size)
            if target == before:
                return ApplyResult(
                    desired, before, before, f"already at the bound ({state.min_size}..{state.max_size})"
                )
            if target == 0:
                return self._apply_zero(before, state)
            result = self._apply_patch(target, before)
            if target != desired:
                result = dataclasses.replace(
                    result,
                    requested=desired,
                    detail=f"{result.detail} (clamped to {state.min_size}..{state.max_size})",
                )
            return result
        return self._apply_signals(desired, before, state)

    # --- modes -----------------------------------------------------------------------------------
    def _apply_patch(self, desired: int, before: int) -> ApplyResult:
        self._request(
            "PATCH",
            self._path,
            json={"parameters": {self.desired_parameter: desired}},
            what=f"update of {self.desired_parameter}={desired}",
            expect_json=False,
        )
        stack = self._wait_stack_settled(self.update_timeout)
        status = stack["stack_status"]
        if status != "UPDATE_COMPLETE":
            raise ActuatorError(f"stack {self.stack_name} {status}: {stack.get('stack_status_reason', '')}")
        after = self._size()
        return ApplyResult(desired, before, after, f"PATCH {self.desired_parameter}={desired}: {status}")

    def _apply_zero(self, before: int, state: GroupState) -> ApplyResult:
        """PATCH mode down to an empty group.

        Heat 27's AutoScalingGroup reads a desired_capacity of 0 as "not given" and keeps its size
        (handle_update: ``desired_capacity or capacity``) while the stack reports UPDATE_COMPLETE.
        So: PATCH to 1, then the last server goes through the scale-down policy's signal, which
        Heat honours once the update's cooldown is over (until then the size stays 1, and the
        monitor's next look asks again).
        """
        steps = []
        if before > 1:
            patched = self._apply_patch(1, before)
            steps.append(patched.detail)
            before_signal = patched.after
        else:
            before_signal = before
        last = self._apply_signals(
            0, before_signal, dataclasses.replace(state, current=before_signal), via="signal"
        )
        steps.append(last.detail)
        return ApplyResult(
            0,
            before,
            last.after,
            "; ".join(steps) + f" (Heat ignores {self.desired_parameter}=0: the last server goes by signal)",
        )

    def _apply_signals(
        self, desired: int, before: int, state: GroupState, via: str | None = None
    ) -> ApplyResult:
        via = via or self.mode
        up = desired > before
        policy = self.up_policy if up else self.down_policy
        if policy is None:  # the constructor refuses signal/alarm modes without both policies
            raise ActuatorError(f"no scaling-{'up' if up else 'down'} policy in stack {self.stack_name}")
        current, sent, notes = before, 0, []
        while (current < desired) if up else (current > desired):
            ignored = self._will_ignore(up, current, state)
            self._signal(policy, via)
            sent += 1
            new = self._wait_size_change(current, self.quiet_wait if ignored else self.settle_timeout)
            if new == current:
                notes.append(f"Heat did not resize ({ignored or 'no change within the wait'})")
                break
            current = new
            state = GroupState(current=current, min_size=state.min_size, max_size=state.max_size)
        detail = f"{sent} {via} to {policy}"
        if notes:
            detail += "; " + "; ".join(notes)
        return ApplyResult(desired, before, current, detail)

    def _will_ignore(self, up: bool, current: int, state: GroupState) -> str:
        """Why Heat will ignore a signal now, from its own group metadata ("" if it will not)."""
        if up and state.max_size is not None and current >= state.max_size:
            return f"at max_size {state.max_size}"
        if not up and state.min_size is not None and current <= state.min_size:
            return f"at min_size {state.min_size}"
        meta, now = self._group_metadata(with_server_time=True)
        if meta.get("scaling_in_progress"):
            return "scaling in progress"
        ends = list((meta.get("cooldown_end") or {}).keys())
        # The Date header has whole seconds: only a cooldown that outlasts it by more counts.
        if ends and now is not None and _seconds_between(now, ends[0]) > 1.0:
            return f"in cooldown until {ends[0]}"
        return ""

    def _signal(self, policy: str, via: str) -> None:
        """POST the policy's signal URL with a token (``via="signal"``) or its pre-signed alarm_url."""
        if via == "signal":
            self._request(
                "POST",
                f"{self._path}/resources/{policy}/signal",
                what=f"signal to {policy}",
                expect_json=False,
            )
            return
        url = self._alarm_url(policy)
        resp = self._session.post(url, authenticated=False, raise_exc=False)
        if resp.status_code >= 400:
            raise ActuatorError(f"alarm_url of {policy}: HTTP {resp.status_code}: {_message(resp)}")

    def _alarm_url(self, policy: str) -> str:
        if policy not in self._alarm_urls:
            body = self._request(
                "GET",
                f"{self._path}/resources/{policy}",
                params={"with_attr": "alarm_url"},
                what=f"resource {policy}",
            )
            url = (body["resource"].get("attributes") or {}).get("alarm_url")
            if not url:
                raise ActuatorError(f"{policy} has no alarm_url (is it an {POLICY_TYPE}?)")
            self._alarm_urls[policy] = url
        return self._alarm_urls[policy]

    # --- reading the stack ------------------------------------------------------------------------
    def _stack(self) -> dict:
        # resolve_outputs=False: a plain GET resolves every output and can 404 mid-update.
        return self._request(
            "GET",
            self._path,
            params={"resolve_outputs": False},
            what=f"stack {self.stack_name}",
            retry_404=True,
        )["stack"]

    def _size(self, allow_stale: bool = False) -> int:
        try:
            body = self._request(
                "GET",
                f"{self._path}/outputs/{self.size_output}",
                what=f"output {self.size_output}",
                retry_404=True,
            )
        except ActuatorError:
            if allow_stale and self._last_size is not None:
                return self._last_size
            raise
        output = body.get("output") or {}
        if output.get("output_error"):
            if allow_stale and self._last_size is not None:
                return self._last_size
            raise ActuatorError(f"output {self.size_output}: {output['output_error']}")
        value: Any = output.get("output_value")  # int() below refuses what is not a number
        try:
            self._last_size = int(value)
        except (TypeError, ValueError) as exc:
            raise ActuatorError(
                f"output {self.size_output} of stack {self.stack_name} is "
                f"{value!r}, not a number (it should be the group's current_size)"
            ) from exc
        return self._last_size

    def _group_metadata(self, with_server_time: bool = False):
        resp = self._raw(
            "GET",
            f"{self._path}/resources/{self.group}/metadata",
            what=f"metadata of {self.group}",
            retry_404=True,
        )
        meta = resp.json().get("metadata") or {}
        if not with_server_time:
            return meta
        # Compare with Heat's clock (its Date header), not ours: cooldown_end is Heat's UTC time.
        server = resp.headers.get("Date")
        now = None
        if server:
            now = (
                email.utils.parsedate_to_datetime(server).astimezone(_dt.UTC).replace(tzinfo=None).isoformat()
            )
        return meta, now

    def _bounds(self, stack: dict) -> tuple[int | None, int | None]:
        props = self._template["resources"][self.group].get("properties") or {}
        params = stack.get("parameters") or {}
        return _resolve_int(props.get("min_size"), params), _resolve_int(props.get("max_size"), params)

    def _wait_size_change(self, current: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            size = self._size(allow_stale=True)
            if size != current:
                # The group may still be finishing (scaling_in_progress); let it settle.
                self._wait_group_idle(deadline + self.settle_timeout)
                return self._size(allow_stale=True)
            if time.monotonic() >= deadline:
                # Heat may have taken the signal after all: while it resizes, keep waiting.
                if (
                    self._group_metadata().get("scaling_in_progress")
                    and time.monotonic() < deadline + self.settle_timeout
                ):
                    self._sleep(self.poll_interval)
                    continue
                return size
            self._sleep(self.poll_interval)

    def _wait_group_idle(self, deadline: float) -> None:
        while self._group_metadata().get("scaling_in_progress") and time.monotonic() < deadline:
            self._sleep(self.poll_interval)

    def _wait_stack_settled(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        self._sleep(self.poll_interval)
        while True:
            stack = self._stack()
            if not stack["stack_status"].endswith("_IN_PROGRESS"):
                return stack
            if time.monotonic() >= deadline:
                raise ActuatorError(
                    f"stack {self.stack_name} still {stack['stack_status']} after {timeout:.0f} s"
                )
            self._sleep(self.poll_interval)

    # --- HTTP ------------------------------------------------------------------------------------
    def _raw(self, method: str, path: str, *, what: str, retry_404: bool = False, **kw):
        attempts = 6 if retry_404 else 1
        for attempt in range(attempts):
            try:
                resp = self._api.request(path, method, raise_exc=False, **kw)
            except Exception as exc:  # connection refused, DNS, auth plugin failures
                raise ActuatorError(f"Heat {method} {what}: {exc}") from exc
            if resp.status_code == 404 and attempt + 1 < attempts:
                self._sleep(self.poll_interval)  # transient while an update swaps resources
                continue
            if resp.status_code >= 400:
                raise ActuatorError(f"Heat {method} {what}: HTTP {resp.status_code}: {_message(resp)}")
            return resp
        raise AssertionError("unreachable")

    def _request(
        self, method: str, path: str, *, what: str, expect_json: bool = True, retry_404: bool = False, **kw
    ) -> Any:
        resp = self._raw(method, path, what=what, retry_404=retry_404, **kw)
        if not expect_json:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise ActuatorError(f"Heat {method} {what}: not JSON: {resp.text[:200]}") from exc

    # --- template helpers ------------------------------------------------------------------------
    def _only(self, resources: dict, types, what: str) -> str:
        names = self._names(resources, types)
        if len(names) != 1:
            raise ActuatorError(
                f"stack {self.stack_name}: expected exactly one {what}, found "
                f"{names or 'none'}; name it explicitly"
            )
        return names[0]

    @staticmethod
    def _names(resources: dict, types) -> list[str]:
        return sorted(n for n, r in resources.items() if (r or {}).get("type") in types)

    def _policy(self, resources: dict, stack: dict, sign: int) -> str | None:
        params = stack.get("parameters") or {}
        found = []
        for name in self._names(resources, (POLICY_TYPE,)):
            props = resources[name].get("properties") or {}
            target = props.get("auto_scaling_group_id")
            if isinstance(target, dict) and target.get("get_resource") not in (None, self.group):
                continue
            adj = _resolve_int(props.get("scaling_adjustment"), params)
            if adj is not None and adj * sign > 0:
                found.append(name)
        if len(found) > 1:
            raise ActuatorError(
                f"stack {self.stack_name}: several {'up' if sign > 0 else 'down'} "
                f"policies {found}; name one explicitly"
            )
        return found[0] if found else None


def session_from_cloud(cloud: str | None = None, region: str | None = None):
    """A keystoneauth session the OpenStack way: clouds.yaml / ``OS_CLOUD`` / ``OS_*``."""
    from openstack import config as os_config
    from openstack import exceptions as os_exc

    try:
        return os_config.OpenStackConfig().get_one(cloud=cloud, region_name=region).get_session()
    except os_exc.OpenStackCloudException as exc:
        raise ActuatorError(
            f"cannot load OpenStack credentials ({cloud or 'OS_CLOUD / OS_*'}): {exc}"
        ) from exc


def _seconds_between(start_iso: str, end_iso: str) -> float:
    """Seconds from one naive UTC ISO timestamp to another (Heat's and its Date header's)."""
    parse = _dt.datetime.fromisoformat
    return (parse(end_iso) - parse(start_iso)).total_seconds()


def _clamp(value: int, low: int | None, high: int | None) -> int:
    if high is not None:
        value = min(value, high)
    if low is not None:
        value = max(value, low)
    return value


def _param_name(value) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("get_param"), str):
        return value["get_param"]
    return None


def _resolve_int(value, params: dict) -> int | None:
    name = _param_name(value)
    if name is not None:
        value = params.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _message(resp) -> str:
    """Heat's own error text: ``{"error": {"message": ...}}`` or ``{"title", "explanation"}``."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for key in ("explanation", "message", "title"):
            if body.get(key):
                return str(body[key])
    return str(body)[:500]

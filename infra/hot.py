"""The worker group's HOT template, built from a stack's config. Pure: no I/O, no Pulumi.

The template holds everything Heat makes for the group, so deleting the one
``orchestration.StackV1`` that carries it removes every server, the server group and the
scaling policies. Values known from the config are written into the template (a reviewer sees
them in ``python -m infra render``); values known only at deploy time (the image id, the
security group) and secrets (the credential) are parameters, the secrets ``hidden``.
"""

from __future__ import annotations

from typing import Any

import yaml

from infra.config import HANDLER_ENV, StackConfig, program_env
from workload.drain_request import METADATA_URL

HOT_VERSION = "2021-04-16"  # wallaby: every property used here exists in it

# Where the bake puts the consumer and what cloud-init writes (the bake's unit reads both files).
CONSUMER_UNIT = "queue-workers-consumer.service"
MONITOR_UNIT = "queue-workers-monitor.service"
SETTINGS_DIR = "/etc/queue-workers"
CONSUMER_ENV_FILE = f"{SETTINGS_DIR}/consumer.env"
MONITOR_ENV_FILE = f"{SETTINGS_DIR}/monitor.env"

# Resource and output names other parts rely on (the monitor's access rules name the policies).
GROUP, SERVER_GROUP, SCALE_UP, SCALE_DOWN = "group", "server_group", "scale_up", "scale_down"
OUT_SCALE_UP_URL, OUT_SCALE_DOWN_URL = "scale_up_url", "scale_down_url"
OUT_SCALE_UP_ALARM_URL, OUT_SCALE_DOWN_ALARM_URL = "scale_up_alarm_url", "scale_down_alarm_url"
OUT_CURRENT_SIZE, OUT_SERVER_IDS = "current_size", "server_ids"

# Parameters the program passes to the stack.
P_IMAGE, P_SECURITY_GROUP, P_DESIRED = "image", "security_group", "desired"
P_CREDENTIALS_ENV = "credentials_env_b64"
P_TEMPLATE_PROPERTIES, P_TEMPLATE_LABEL = "template_image_properties", "template_image"


def group_stack_name(stack: str) -> str:
    """The name of the Heat stack that holds the worker group of Pulumi stack ``stack``."""
    return f"queue-workers-{stack}"


def consumer_env(cfg: StackConfig) -> dict[str, str]:
    """The consumer container's settings (not secret): QW_* variables of `workload consumer`.

    The stack's own settings first (queue, handler, claim policy), then every consumer option a
    stack setting sets (:func:`infra.config.program_env`), then consumerEnv.
    """
    kind, target = cfg.handler.split(":", 1)
    env = {
        "QW_QUEUE": cfg.queue_name,
        "QW_QUEUE_BACKEND": cfg.queue_backend,
        "QW_REGION": cfg.region,
        HANDLER_ENV[kind]: target,
        "QW_CLAIM_TTL": str(cfg.claim_ttl),
        "QW_CLAIM_GRACE": str(cfg.claim_grace),
        # the consumer's access rules allow deleting one message at a time, not ?ids= bulk deletes
        "QW_NO_BULK_DELETE": "true",
    }
    env.update(amqp_env(cfg))
    if not cfg.no_drain:
        # the drain protocol: the monitor asks through the server's metadata (workload/drain_request.py)
        env["QW_DRAIN_WATCH"] = METADATA_URL
    if cfg.max_claims:
        # Zaqar dead-letters on the claim after max_claims; the consumer's own count is the backstop
        env["QW_MAX_ATTEMPTS"] = str(cfg.max_claims + 1)
    env.update(program_env(cfg, "consumer"))
    env.update(cfg.consumer_env)
    return env


def amqp_env(cfg: StackConfig) -> dict[str, str]:
    """The broker settings every program of an amqp stack reads that are not secret."""
    if cfg.queue_backend != "amqp" or not cfg.amqp_management_url:
        return {}
    return {"QW_AMQP_MANAGEMENT_URL": cfg.amqp_management_url}


def amqp_comments(cfg: StackConfig) -> list[str]:
    """The env files' first lines on an amqp stack: which broker its programs use."""
    if cfg.queue_backend != "amqp":
        return []
    if cfg.amqp_broker == "server":
        return [
            f"queue backend amqp, amqpBroker server: the stack's own broker server (RabbitMQ "
            f"{cfg.amqp_broker_image}), amqps:// verified against its CA; URL and user in the secret part"
        ]
    return [
        "queue backend amqp, amqpBroker existing: the broker amqpUrl names; URL and user in the secret part"
    ]


def amqp_secret_env(cfg: StackConfig, role: str) -> dict[str, str]:
    """The broker URL and ``role``'s user (``consumer`` or ``monitor``): the secret part of its env file.

    ``QW_AMQP_USER`` / ``QW_AMQP_PASSWORD`` override the URL's credentials (workload.queues.amqp_address),
    so a role with a user of its own never logs in as amqpUrl's user.
    """
    if cfg.queue_backend != "amqp" or cfg.amqp_broker == "server":
        return {}  # the broker server's: infra.broker.role_env, known once it is declared
    env = {"QW_AMQP_URL": cfg.amqp_url}
    user = getattr(cfg, f"amqp_{role}_user")
    if user:
        env.update(QW_AMQP_USER=user, QW_AMQP_PASSWORD=getattr(cfg, f"amqp_{role}_password"))
    return env


def credentials_env(
    auth_url: str,
    region: str,
    credential_id: str,
    credential_secret: str,
    extra: dict[str, str] | None = None,
) -> str:
    """The env file of an application credential, the OpenStack way (OS_* variables)."""
    env = {
        "OS_AUTH_TYPE": "v3applicationcredential",
        "OS_AUTH_URL": auth_url,
        "OS_APPLICATION_CREDENTIAL_ID": credential_id,
        "OS_APPLICATION_CREDENTIAL_SECRET": credential_secret,
        "OS_REGION_NAME": region,
        "OS_INTERFACE": "public",
    }
    env.update(extra or {})
    return env_file(env)


def env_file(env: dict[str, str], comments: list[str] | tuple = ()) -> str:
    """``KEY=value`` lines that both systemd's EnvironmentFile and ``docker --env-file`` read.

    ``comments`` become ``#`` lines at the top (both formats skip them).
    """
    lines = [f"# {c}" for c in comments]
    for key, value in env.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"{key}: a setting's value may not hold a line break")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


MONITOR_UNIT_TEXT = f"""[Unit]
Description=queue-workers monitor (workload container): scales the worker group from the queue's depth
Requires=docker.service
After=docker.service network-online.target
Wants=network-online.target
ConditionPathExists={MONITOR_ENV_FILE}

[Service]
Type=simple
# QW_WORKLOAD_IMAGE: baked into the template image by `fab bake-template`.
EnvironmentFile={SETTINGS_DIR}/image.env
ExecStartPre=-/usr/bin/docker rm -f queue-workers-monitor
ExecStart=/usr/bin/docker run --rm --name queue-workers-monitor --network host --env-file {MONITOR_ENV_FILE} ${{QW_WORKLOAD_IMAGE}} monitor
ExecStop=/usr/bin/docker stop --time 30 queue-workers-monitor
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
"""


def cloud_config(
    env_path: str,
    env: dict[str, str],
    unit: str,
    credentials_b64: Any,
    unit_text: str | None = None,
    comments: list[str] | tuple = (),
) -> dict:
    """cloud-init user data: write the settings, append the credential, start the unit.

    The baked unit reads one env file (``docker run --env-file``): the settings are written in
    plain text (a reviewer sees them in the template) and the credential, base64 of an env file,
    is appended to the same file (``append``; the file is 0600). ``credentials_b64`` is a HOT
    ``get_param`` placeholder inside the template, or the value itself for the monitor's server.
    The unit is started with ``--no-block`` so that runcmd (cloud-final) does not wait for the container.
    """
    files = [
        {"path": env_path, "permissions": "0600", "owner": "root:root", "content": env_file(env, comments)},
        {
            "path": env_path,
            "permissions": "0600",
            "owner": "root:root",
            "encoding": "b64",
            "append": True,
            "content": credentials_b64,
        },
    ]
    cmds = [["systemctl", "daemon-reload"]]
    if unit_text is not None:
        files.append(
            {
                "path": f"/etc/systemd/system/{unit}",
                "permissions": "0644",
                "owner": "root:root",
                "content": unit_text,
            }
        )
        cmds.append(["systemctl", "enable", unit])
    cmds.append(["systemctl", "start", "--no-block", unit])
    return {"write_files": files, "runcmd": cmds}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so user data and env files read as they will land."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def user_data(doc: dict) -> str:
    """cloud-init user data text of ``doc``."""
    return "#cloud-config\n" + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)


PLACEHOLDER_CREDENTIALS = "__CREDENTIALS_ENV_B64__"  # in the user data; Heat puts the parameter there


def build(cfg: StackConfig, stack_name: str) -> dict:
    """The HOT template (a dict) of the worker group of ``cfg``."""
    return {
        "heat_template_version": HOT_VERSION,
        "description": f"queue-workers: consumers of queue {cfg.queue_name} ({stack_name}, {cfg.region})",
        "parameters": _parameters(cfg),
        "resources": _resources(cfg, stack_name),
        "outputs": _outputs(),
    }


def _member_server(cfg: StackConfig, stack_name: str) -> dict[str, Any]:
    """The properties of each member ``OS::Nova::Server``: image, flavor, network, user data."""
    ud = user_data(
        cloud_config(
            CONSUMER_ENV_FILE,
            consumer_env(cfg),
            CONSUMER_UNIT,
            PLACEHOLDER_CREDENTIALS,
            comments=amqp_comments(cfg),
        )
    )
    server: dict[str, Any] = {
        "image": {"get_param": P_IMAGE},
        "image_update_policy": "REBUILD",  # a new template image rebuilds members batch by batch
        "flavor": cfg.flavor,
        "networks": [{"network": cfg.network}],
        "security_groups": [{"get_param": P_SECURITY_GROUP}],
        "scheduler_hints": {"group": {"get_resource": SERVER_GROUP}},
        "metadata": {
            "qw_role": "consumer",
            "qw_queue": cfg.queue_name,
            "qw_stack": stack_name,
            "qw_template": {"get_param": P_TEMPLATE_LABEL},  # which bake this server runs
        },
        "user_data_format": "RAW",
        "user_data": {
            "str_replace": {
                "template": ud,
                "params": {PLACEHOLDER_CREDENTIALS: {"get_param": P_CREDENTIALS_ENV}},
            }
        },
    }
    if cfg.key_pair:
        server["key_name"] = cfg.key_pair
    return server


def _parameters(cfg: StackConfig) -> dict:
    """What the program passes in: the image, the security group, the desired size, the credential."""
    return {
        P_IMAGE: {
            "type": "string",
            "description": "template image id (baked by fab bake-template)",
            "constraints": [{"custom_constraint": "glance.image"}],
        },
        P_SECURITY_GROUP: {"type": "string", "description": "security group of the consumers"},
        P_DESIRED: {
            "type": "number",
            "default": cfg.desired_size,
            "description": "desired number of consumers (the monitor may PATCH it)",
            "constraints": [{"range": {"min": cfg.min_size, "max": cfg.max_size}}],
        },
        P_TEMPLATE_PROPERTIES: {
            "type": "json",
            "default": {},
            "description": "what the bake recorded on the image (qw_* properties)",
        },
        P_TEMPLATE_LABEL: {
            "type": "string",
            "default": "",
            "description": "template name, version and content hash (server metadata)",
        },
        P_CREDENTIALS_ENV: {
            "type": "string",
            "hidden": True,
            "description": "base64 of the consumers' credential env file",
        },
    }


def _resources(cfg: StackConfig, stack_name: str) -> dict:
    """The server group, the scaling group of member servers and its two scaling policies."""
    batch = min(cfg.rolling_batch_size, cfg.max_size)
    return {
        SERVER_GROUP: {
            "type": "OS::Nova::ServerGroup",
            "properties": {"name": f"{cfg.server_name}-{stack_name}", "policies": ["soft-anti-affinity"]},
        },
        GROUP: {
            "type": "OS::Heat::AutoScalingGroup",
            "properties": {
                "min_size": cfg.min_size,
                "max_size": cfg.max_size,
                "desired_capacity": {"get_param": P_DESIRED},
                "cooldown": int(cfg.scale_up_cooldown),
                "rolling_updates": {
                    "min_in_service": max(cfg.min_size - batch, 0),
                    "max_batch_size": batch,
                    "pause_time": cfg.rolling_pause,
                },
                "resource": {"type": "OS::Nova::Server", "properties": _member_server(cfg, stack_name)},
            },
        },
        SCALE_UP: _scaling_policy(cfg.scale_up_step, cfg.scale_up_cooldown),
        SCALE_DOWN: _scaling_policy(-cfg.scale_down_step, cfg.scale_down_cooldown),
    }


def _scaling_policy(adjustment: int, cooldown: float) -> dict:
    """A Heat scaling policy of the group that changes its size by ``adjustment``."""
    return {
        "type": "OS::Heat::ScalingPolicy",
        "properties": {
            "adjustment_type": "change_in_capacity",
            "auto_scaling_group_id": {"get_resource": GROUP},
            "scaling_adjustment": adjustment,
            "cooldown": int(cooldown),
        },
    }


def _output(description: str, resource: str, attribute: str) -> dict:
    return {"description": description, "value": {"get_attr": [resource, attribute]}}


def _outputs() -> dict:
    """The scaling URLs (signal and pre-signed), the group's size and its servers."""
    return {
        OUT_SCALE_UP_URL: _output("POST with X-Auth-Token to add consumers", SCALE_UP, "signal_url"),
        OUT_SCALE_DOWN_URL: _output("POST with X-Auth-Token to remove consumers", SCALE_DOWN, "signal_url"),
        OUT_SCALE_UP_ALARM_URL: _output("pre-signed URL that adds consumers", SCALE_UP, "alarm_url"),
        OUT_SCALE_DOWN_ALARM_URL: _output("pre-signed URL that removes consumers", SCALE_DOWN, "alarm_url"),
        OUT_CURRENT_SIZE: _output("consumers that exist now", GROUP, "current_size"),
        OUT_SERVER_IDS: _output("ids of the consumer servers", GROUP, "refs"),
    }


def member_template(template: dict) -> dict:
    """The group's member as a template of its own (Heat validates nested members over RPC only).

    Parameters the member refers to are carried over; ``get_resource`` on the server group becomes
    a parameter, as it would be a resolved id inside the group.
    """
    member = template["resources"][GROUP]["properties"]["resource"]
    props = yaml.safe_load(yaml.safe_dump(member["properties"]))
    props["scheduler_hints"] = {"group": {"get_param": "server_group_id"}}
    params = dict(template["parameters"])
    params["server_group_id"] = {"type": "string"}
    return {
        "heat_template_version": template["heat_template_version"],
        "parameters": params,
        "resources": {"member": {"type": member["type"], "properties": props}},
    }


def dump(template: dict) -> str:
    """YAML text of a template, in a stable order (what Pulumi sends and what render prints)."""
    return yaml.dump(template, Dumper=_Dumper, sort_keys=False, width=1000)

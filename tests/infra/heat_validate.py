"""Validate HOT templates with Heat's own engine, offline. Run with the OpenStack venv's python:

    $QW_OPENSTACK_VENV/bin/python tests/infra/heat_validate.py TEMPLATE.yaml [MEMBER.yaml ...]

Each file is parsed and validated the way heat-engine does on stack-create (property names,
types, required properties, allowed values, references, resource types and support status).
Calls that would reach the cloud (service availability, custom constraints such as
``glance.image``) are stubbed to "yes". Prints one JSON line per file, ``{"file", "ok", "error"}``,
and exits 1 if any template was refused.
"""

import json
import sys
import warnings

warnings.filterwarnings("ignore")


def _setup():
    import logging

    logging.disable(logging.WARNING)  # Heat lists every hidden resource type at start
    from heat.common import config as _heat_config  # noqa: F401 - registers heat's options
    from oslo_config import cfg

    cfg.CONF([], project="heat", default_config_files=[])
    from heat.engine import constraints, resource, resources

    resources.initialise()
    resource.Resource.is_service_available = classmethod(lambda cls, context: (True, None))
    constraints.BaseCustomConstraint.validate = lambda self, value, context, template=None: True
    # The server compares the image's min disk/RAM with the flavor by asking Glance and Nova.
    from heat.engine.resources.openstack.nova import server

    server.Server._validate_image_flavor = lambda self, image, flavor: None
    # Nova's answers: every microversion this template needs, and Nova's default limits.
    from heat.engine.clients.os import nova

    nova.NovaClientPlugin.is_version_supported = lambda self, version: True
    # A group's nested stack is validated over RPC to heat-engine; the caller validates the
    # member as a template of its own instead (infra.hot.member_template).
    from heat.engine.resources import stack_resource

    stack_resource.StackResource.validate_nested_stack = lambda self: None
    nova.NovaClientPlugin.absolute_limits = lambda self: {
        "maxServerMeta": 128,
        "maxPersonality": 5,
        "maxPersonalitySize": 10240,
    }


def validate(text: str) -> None:
    from heat.common import context, template_format
    from heat.engine import environment, stack, template

    ctx = context.RequestContext(user_id="u", project_id="p", is_admin=False, auth_token="t")
    tmpl = template.Template(template_format.parse(text), env=environment.Environment({}))
    params = tmpl.param_schemata()
    env = environment.Environment(
        {"parameters": {name: _sample(p) for name, p in params.items() if p.default is None}}
    )
    tmpl = template.Template(template_format.parse(text), env=env)
    st = stack.Stack(ctx, "validate", tmpl)
    _check_support_status(env, tmpl)
    st.validate(validate_res_tmpl_only=False)


def _check_support_status(env, tmpl):
    """Refuse hidden (retired) and deprecated resource types, as Heat's resource-type API does.

    Stack validation itself would accept them and fail only at create time (no such service).
    """
    from heat.engine import support

    for name, defn in tmpl.resource_definitions(None).items():
        cls = env.get_class(defn.resource_type, resource_name=name)
        status = getattr(cls, "support_status", None)
        if status is not None and status.status in (support.HIDDEN, support.DEPRECATED, support.UNSUPPORTED):
            raise ValueError(f"resources.{name}: {defn.resource_type} is {status.status}: {status.message}")


def _sample(param):
    return {"Number": 1, "Json": {}, "CommaDelimitedList": "a", "Boolean": True}.get(param.type, "x")


def main(paths):
    _setup()
    bad = 0
    for path in paths:
        try:
            with open(path) as f:
                validate(f.read())
            print(json.dumps({"file": path, "ok": True, "error": None}))
        except Exception as exc:
            bad += 1
            print(json.dumps({"file": path, "ok": False, "error": f"{type(exc).__name__}: {exc}"}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

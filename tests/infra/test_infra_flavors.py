"""The stack's flavors against the template image's min_disk / min_ram, under Pulumi's mocks.

Nova gives a snapshot the builder flavor's disk as min_disk and refuses to boot it on a smaller
flavor; ``pulumi up`` must refuse such a stack before it declares a queue, a credential or a server.
The "cloud" answers getImage and getFlavor through the mocks' ``call`` as the provider would.
"""

from __future__ import annotations

import pulumi
import pytest
from test_infra_broker_server import server_settings

from infra.config import ConfigError
from infra.mocks import baked_image
from infra.render import render, stack_settings

# the local cloud's flavors (devenv/cloud.py): m1.tiny 1 GB disk, m1.small 10 GB
LOCAL_FLAVORS = {"m1.tiny": {"disk": 1, "ram": 512}, "m1.small": {"disk": 10, "ram": 2048}}
BAKED_ON_SMALL = [baked_image(min_disk_gb=10)]  # the bake's default builder flavor


def _declared_types() -> tuple[list[str], object]:
    """A setup hook that records the type of every resource the program declares."""
    seen: list[str] = []

    def setup():
        def record(args):
            seen.append(args.type_)
            return None

        pulumi.runtime.register_stack_transformation(record)

    return seen, setup


def test_local_stack_on_a_template_baked_on_m1_small_is_refused_before_anything_is_declared():
    seen, setup = _declared_types()
    with pytest.raises(ConfigError) as e:
        render("local", images=BAKED_ON_SMALL, flavors=LOCAL_FLAVORS, setup=setup)
    assert e.value.key == "monitorFlavor" and e.value.value == "m1.tiny"
    text = str(e.value)
    for words in (
        "m1.tiny has 1 GB",
        "min_disk 10 GB",
        "10 GB or more",
        "fab bake-template --flavor m1.tiny",
    ):
        assert words in text, text
    assert "queue-workers-consumer-v1-" in text  # names the image found
    made = [t for t in seen if not t.startswith(("pulumi:providers", "queue-workers:index:TemplateImage"))]
    assert made == [], made


def test_local_stack_on_a_template_baked_on_m1_tiny_is_declared():
    r = render("local", images=[baked_image(min_disk_gb=1)], flavors=LOCAL_FLAVORS)
    types = [x.type for x in r.resources]
    assert (
        "openstack:compute/instance:Instance" in types and "openstack:orchestration/stackV1:StackV1" in types
    )
    flavors = sorted(a["name"] for token, a in r.calls if token == "openstack:compute/getFlavor:getFlavor")
    assert flavors == ["m1.small", "m1.tiny"]  # one lookup per flavor the stack boots


def test_a_flavor_with_disk_0_boots_from_volume_and_passes():
    flavors = {**LOCAL_FLAVORS, "m1.tiny": {"disk": 0, "ram": 512}}
    r = render("local", images=BAKED_ON_SMALL, flavors=flavors)
    assert any(x.type == "openstack:compute/instance:Instance" for x in r.resources)


def test_the_consumer_flavor_is_checked_without_a_monitor():
    raw, secrets = stack_settings("local", monitorEnabled=False, flavor="m1.tiny")
    with pytest.raises(ConfigError) as e:
        render("local", images=BAKED_ON_SMALL, flavors=LOCAL_FLAVORS, cfg_override=raw, secret_keys=secrets)
    assert e.value.key == "flavor" and "m1.tiny has 1 GB" in str(e.value)


def test_the_broker_servers_flavor_is_checked():
    flavors = {"big": {"disk": 40, "ram": 8192}, "small": {"disk": 5, "ram": 1024}}
    settings = server_settings(flavor="big", monitorFlavor="big", amqpBrokerFlavor="small")
    with pytest.raises(ConfigError) as e:
        render("ord", images=[baked_image(min_disk_gb=20)], flavors=flavors, cfg_override=settings)
    assert e.value.key == "amqpBrokerFlavor" and "small has 5 GB" in str(e.value)


def test_too_little_ram_for_the_image_is_refused():
    with pytest.raises(ConfigError) as e:
        render("local", images=[baked_image(min_disk_gb=1, min_ram_mb=1024)], flavors=LOCAL_FLAVORS)
    assert e.value.key == "monitorFlavor" and "m1.tiny has 512 MB" in str(e.value)
    assert "min_ram 1024 MB" in str(e.value)


def test_a_flavor_the_cloud_does_not_have_is_refused_by_its_key():
    with pytest.raises(ConfigError) as e:
        render("local", flavors={"m1.small": LOCAL_FLAVORS["m1.small"]})
    assert e.value.key == "monitorFlavor" and e.value.value == "m1.tiny"
    assert "Your query returned no results" in str(e.value)

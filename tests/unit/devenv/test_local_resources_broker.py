"""The local deploy harness's kinds for what the broker server stack declares (pure: a fake cloud).

The real create and delete of the port run in tests/cloud/test_broker_server.py; the local cloud
has no Cinder, so the volume kind is checked here for what it asks of the SDK and the catalog.
"""

from __future__ import annotations

import types

from devenv import local_resources as lr


class _Recorder:
    def __init__(self, answer):
        self.calls, self.answer = [], answer

    def __getattr__(self, name):
        def call(*args, **kw):
            self.calls.append((name, args, kw))
            return self.answer

        return call


def _cloud(**services):
    cloud = types.SimpleNamespace(conn=types.SimpleNamespace(**services), remembered=[])
    cloud.remember = lambda id_, outs: cloud.remembered.append(id_)
    return cloud


def test_port_is_made_with_the_programs_inputs_and_answers_its_fixed_ips():
    port = types.SimpleNamespace(
        id="p1",
        fixed_ips=[{"ip_address": "10.0.0.7", "subnet_id": "s"}],
        security_group_ids=["g"],
        mac_address="fa:16:3e:00:00:01",
        project_id="proj",
    )
    network = _Recorder(port)
    cloud = _cloud(network=network)
    inputs = {"name": "b", "networkId": "n", "securityGroupIds": ["g"], "adminStateUp": True}
    id_, outs = lr.kind_of("openstack:networking/port:Port", True).create(cloud, inputs)
    assert id_ == "p1" and cloud.remembered == ["p1"]
    assert network.calls == [
        (
            "create_port",
            (),
            {"name": "b", "network_id": "n", "admin_state_up": True, "security_group_ids": ["g"]},
        )
    ]
    assert outs["allFixedIps"] == ["10.0.0.7"] and outs["networkId"] == "n"
    lr.PORT.delete(cloud, "p1", outs)
    assert network.calls[-1] == ("delete_port", ("p1",), {"ignore_missing": True})


def test_block_devices_go_to_nova_as_the_provider_sends_them():
    wire = {
        "uuid": "v",
        "sourceType": "volume",
        "destinationType": "volume",
        "bootIndex": -1,
        "deleteOnTermination": False,
    }
    assert lr._block_device(wire) == {
        "uuid": "v",
        "source_type": "volume",
        "destination_type": "volume",
        "boot_index": -1,
        "delete_on_termination": False,
    }


def test_a_volume_needs_block_storage_under_any_of_its_catalog_names():
    kind = lr.kind_of("openstack:blockstorage/volume:Volume", True)
    assert kind is lr.VOLUME and kind.service == lr.BLOCK_STORAGE
    assert set(lr.SERVICE_TYPES[lr.BLOCK_STORAGE]) >= {"block-storage", "volumev3"}

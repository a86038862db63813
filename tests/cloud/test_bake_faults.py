"""A fault at each step of the bake, on the real Nova, Glance and Neutron of the local cloud.

The bake's connection goes through :class:`devenv.fault_proxy.FaultProxy` (one per API, set as
openstacksdk's endpoint overrides), which passes everything on to the real service except the one
request a test picks: refused before it reaches the service, or done by the service and reported
failed to the bake ("after": the worst case, something exists the bake was not told about). For
each: the bake fails with the cloud's error, and nothing is left (server, key pair, security
group, floating IP), and no image but the base is left, so no half-made image looks like a template.

The faults a proxy cannot make are made as on a real cloud: a flavor no host can hold (Nova's
scheduler: NoValidHost, the server goes ERROR), a Fabric step that fails (the bake's step hook),
and the hypervisor's copy of the builder's disk killed during createImage (Nova deletes the image),
there with ``--keep-builder-on-error``.
"""

from __future__ import annotations

import contextlib

import openstack
import pytest
from test_bake_real import NOTHING_LEFT, builder_prereqs, leftovers, workload_archive  # noqa: F401 (fixtures)

from devenv import cloud as local_cloud
from devenv.fault_proxy import FaultProxy
from images import bake as bake_mod

pytestmark = pytest.mark.cloud

# (service type, method, path regex, body substring, when[, status: 503 unless given])
SRV_ACTION = r"/servers/[^/]+/action$"
FAULTS_EARLY = {
    "keypair.create": ("compute", "POST", r"/os-keypairs$", None, "after"),
    "secgroup.create": ("network", "POST", r"/security-groups$", None, "after"),
    "secgroup_rule.create": ("network", "POST", r"/security-group-rules$", None, "after"),
    "server.create": ("compute", "POST", r"/servers$", None, "after"),
    "fip.create": ("network", "POST", r"/floatingips$", None, "after"),
    "console.read": ("compute", "POST", SRV_ACTION, "os-getConsoleOutput", "before"),
}
FAULTS_LATE = {
    "server.stop": ("compute", "POST", SRV_ACTION, "os-stop", "after"),
    "server.create_image": ("compute", "POST", SRV_ACTION, "createImage", "after"),
    # 500, not 503: keystoneauth retries a 503 and the PATCH (an idempotent JSON-patch "add") then
    # succeeds, so a lost 503 answer is no fault at all (seen on the real Glance: the bake went on
    # and its template was complete); a 500 is not retried.
    "image.mark_complete": ("image", "PATCH", r"/images/[^/]+$", None, "after", 500),
}


@contextlib.contextmanager
def proxied(cloud, services=("compute", "image", "network")):
    """A member connection whose requests to ``services`` go through fault proxies."""
    conn = cloud.connection("local")
    proxies = {}
    with contextlib.ExitStack() as stack:
        for service in services:
            url = conn.session.get_endpoint(service_type=service, interface="public")
            proxies[service] = stack.enter_context(FaultProxy(url))
        auth = cloud.cloud_config("local").config
        through = openstack.connect(
            auth=auth["auth"],
            auth_type=auth.get("auth_type", "password"),
            region_name=auth.get("region_name"),
            **{f"{s}_endpoint_override": p.url for s, p in proxies.items()},
        )
        yield through, proxies


def _images_besides_base(conn):
    return [
        (i.name, i.status, (i.properties or {}).get(bake_mod.P_STATE))
        for i in conn.image.images(owner=conn.current_project_id)
        if i.name != local_cloud.BASE_IMAGE
    ]


@pytest.mark.parametrize("fault", [*FAULTS_EARLY, *FAULTS_LATE])
def test_a_fault_at_any_step_leaks_nothing_and_leaves_no_template(
    cloud, member, tmp_path, workload_archive, fault
):
    service, method, path, body, when, *status = {**FAULTS_EARLY, **FAULTS_LATE}[fault]
    before = _images_besides_base(member)
    with proxied(cloud) as (conn, proxies):
        rule = proxies[service].fail(method, path, body_contains=body, when=when, status=(status or [503])[0])
        opts = bake_mod.BakeOptions(
            connection=conn,
            image_archive=workload_archive,
            network=local_cloud.PROVIDER_NETWORK,
            floating_ip_network=local_cloud.EXTERNAL_NETWORK if fault == "fip.create" else None,
            manifest=tmp_path / "manifest.json",
            timeout=600,
            poll=1,
            force=True,
        )
        with pytest.raises(Exception) as err:
            bake_mod.bake(opts)
    assert rule.fired, f"the bake never made the request {fault} picks"
    assert not isinstance(err.value, AssertionError)
    assert leftovers(member) == NOTHING_LEFT
    assert _images_besides_base(member) == before  # a half-made snapshot is deleted
    assert not (tmp_path / "manifest.json").exists()


def _bake_opts(conn, tmp_path, archive, **kw) -> bake_mod.BakeOptions:
    kw = {"network": local_cloud.PROVIDER_NETWORK, "timeout": 600, "poll": 1, "force": True, **kw}
    return bake_mod.BakeOptions(
        connection=conn, image_archive=archive, manifest=tmp_path / "manifest.json", **kw
    )


@pytest.fixture()
def huge_flavor(admin, unique):
    """A flavor no compute host of the cloud can hold: a 1 PB disk (the compute node reports
    600 TB, as Nova's fake driver does; disk has no quota, so Nova takes the request and its
    scheduler finds no host)."""
    flavor = admin.compute.create_flavor(name=unique("huge"), ram=512, vcpus=1, disk=1 << 20, is_public=True)
    yield flavor
    admin.compute.delete_flavor(flavor, ignore_missing=True)


def test_a_builder_no_host_can_hold_goes_to_error_and_is_deleted(
    member, tmp_path, workload_archive, huge_flavor
):
    """Nova's scheduler finds no valid host: the server goes ERROR; the bake names Nova's fault."""
    with pytest.raises(bake_mod.BakeError, match="went to ERROR: No valid host"):
        bake_mod.bake(_bake_opts(member, tmp_path, workload_archive, flavor=huge_flavor.name))
    assert leftovers(member) == NOTHING_LEFT
    assert not (tmp_path / "manifest.json").exists()


def test_a_failing_fabric_step_cleans_up(member, tmp_path, workload_archive):
    """A Fabric step on the builder fails (Ctrl-C during one: test_bake_real's `fab` run)."""

    def hook(label):
        if label.startswith("install packages"):
            raise RuntimeError(f"injected at {label}")

    with pytest.raises(RuntimeError, match="injected"):
        bake_mod.bake(_bake_opts(member, tmp_path, workload_archive, step_hook=hook))
    assert leftovers(member) == NOTHING_LEFT


def _builder_machine(cloud, member):
    """The builder's machine on this host (devenv.machines), as the compute driver runs it."""
    from devenv.machines import Machine

    server = next(s for s in member.compute.servers() if s.name.startswith("qw-bake-"))
    return server, Machine(local_cloud.machine_name(server.id), cloud.run_dir / "instances" / server.id)


def test_keep_builder_on_error_keeps_the_builder_but_not_a_snapshot_that_failed(
    cloud, member, tmp_path, workload_archive
):
    """The hypervisor's copy of the builder's disk dies during createImage (SIGKILL): Nova deletes
    the image and the bake says so; --keep-builder-on-error keeps the builder, its key pair and
    security group, and no image but the base is left."""
    import os
    import signal
    import threading

    from devenv.procs import wait_until

    kept = []

    def kill_the_copy(label):
        if label.startswith("snapshot as"):
            server, machine = _builder_machine(cloud, member)
            kept.append(server)
            threading.Thread(
                target=lambda: os.kill(
                    wait_until(machine.snapshot_pid, 300, "the snapshot copy"), signal.SIGKILL
                ),
                daemon=True,
            ).start()

    before = _images_besides_base(member)
    opts = _bake_opts(member, tmp_path, workload_archive, step_hook=kill_the_copy, keep_builder_on_error=True)
    try:
        with pytest.raises(
            bake_mod.BakeError, match="was deleted: the cloud's snapshot of the builder failed"
        ):
            bake_mod.bake(opts)
        left = leftovers(member)
        assert [len(left[k]) for k in ("servers", "keypairs", "security_groups")] == [1, 1, 1], left
        assert left["servers"] == [kept[0].name]
        assert member.compute.get_server(kept[0].id).status == "SHUTOFF"
        assert _images_besides_base(member) == before
    finally:
        for server in kept:
            member.compute.delete_server(server, ignore_missing=True)
            member.compute.wait_for_delete(server, wait=180)
        for group in member.network.security_groups(project_id=member.current_project_id):
            if group.name.startswith("qw-bake-"):
                member.network.delete_security_group(group)
        for pair in member.compute.keypairs():
            if pair.name.startswith("qw-bake-"):
                member.compute.delete_keypair(pair)
    assert leftovers(member) == NOTHING_LEFT

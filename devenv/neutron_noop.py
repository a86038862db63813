"""An ML2 mechanism driver for the local Neutron that binds every port, with no agent behind it.

Neutron ships no such driver: without one, ports never bind and Nova puts the server in ERROR
(``PortBindingFailed``). The servers of the local cloud get their addresses from the config drive
and their wiring from devenv's compute driver, so nothing has to happen on a host: the port is
bound with VIF type ``tap`` and is ACTIVE at once. Registered as ``qw_noop`` under
``neutron.ml2.mechanism_drivers`` by ``devenv/openstack_plugins`` (installed into the OpenStack
virtualenv by ``make venv-openstack``).
"""

from __future__ import annotations

from neutron_lib import constants
from neutron_lib.plugins.ml2 import api

VIF_TYPE = "tap"


class NoopMechanismDriver(api.MechanismDriver):
    """Binds each port to the first segment offered; no agent, no host-side work."""

    def initialize(self) -> None:
        pass

    def bind_port(self, context) -> None:
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID], VIF_TYPE, {"port_filter": False}, status=constants.PORT_STATUS_ACTIVE
            )
            return

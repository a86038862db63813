"""Local stand-in of Keystone, Nova, Glance and Neutron for the bake (see server.py)."""

from devenv.cloud_standin.server import CloudStandin, CloudState

__all__ = ["CloudStandin", "CloudState"]

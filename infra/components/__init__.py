"""The stack's building blocks, one ComponentResource each (see each module's docstring)."""

from infra.components.broker import BrokerArgs, BrokerServer
from infra.components.credentials import Credentials, CredentialsArgs
from infra.components.group import WorkerGroup, WorkerGroupArgs
from infra.components.image import TemplateImage, TemplateImageArgs, TemplateImageMissing
from infra.components.monitor import MonitorArgs, MonitorServer
from infra.components.network import Network, NetworkArgs
from infra.components.queue import WorkQueue, WorkQueueArgs
from infra.config import TYPE_PREFIX

__all__ = [
    "TYPE_PREFIX",
    "BrokerArgs",
    "BrokerServer",
    "Credentials",
    "CredentialsArgs",
    "MonitorArgs",
    "MonitorServer",
    "Network",
    "NetworkArgs",
    "TemplateImage",
    "TemplateImageArgs",
    "TemplateImageMissing",
    "WorkQueue",
    "WorkQueueArgs",
    "WorkerGroup",
    "WorkerGroupArgs",
]

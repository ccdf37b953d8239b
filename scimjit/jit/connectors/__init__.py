"""Alias kept for connector plugins written against 0.1 (`from scimjit.jit.connectors import Call, ...`):
the connector protocol lives in `scimjit.delivery.connectors`."""

from scimjit.delivery.connectors import *  # noqa: F403
from scimjit.delivery.connectors.base import *  # noqa: F403

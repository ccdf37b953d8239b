"""Alias kept for connector plugins written against 0.1 (`from scimjit.jit.connectors.base import ...`):
the connector protocol lives in `scimjit.delivery.connectors.base`."""

from scimjit.delivery.connectors.base import *  # noqa: F403

"""Alias kept for receivers written against 0.1 (`scimjit.jit.connectors.webhook.verify_signature`)."""

from scimjit.delivery.connectors.webhook import *  # noqa: F403
from scimjit.delivery.connectors.webhook import verify_signature as verify_signature

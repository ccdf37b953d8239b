"""Alias kept for connector plugins written against 0.1: use `scimjit.delivery.connectors` in new code."""

"""Alias kept for connector plugins written against 0.1 (`from scimjit.jit.settings import ConfigError`)."""

from scimjit.config import ConfigError as ConfigError

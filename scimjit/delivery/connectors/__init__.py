"""Connector registry: the built-in `webhook` and `scim` connectors, plus plugins by entry point.

A plugin is a distribution that declares, in its pyproject.toml,

    [project.entry-points."scimjit.connectors"]
    mycrm = "mycrm_scimjit:MyCrmConnector"

where the object is a callable `(settings: Mapping[str, Any], application: str) -> Connector` (a class whose
`__init__` takes those two arguments will do). `[applications.connector] type = "mycrm"` then selects it;
every other key of that table arrives in `settings`. See docs/connectors.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from scimjit.config import ConfigError
from scimjit.delivery.connectors.base import (
    Call,
    Connector,
    ConnectorError,
    Outcome,
    PermanentError,
    Result,
    TransientError,
)
from scimjit.delivery.connectors.scim import ScimConnector
from scimjit.delivery.connectors.webhook import WebhookConnector
from scimjit.entitlement.apps import Application

ENTRY_POINT_GROUP = "scimjit.connectors"

ConnectorFactory = Callable[[Mapping[str, Any], str], Connector]

BUILTIN: dict[str, ConnectorFactory] = {"webhook": WebhookConnector, "scim": ScimConnector}

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "Call",
    "Connector",
    "ConnectorError",
    "ConnectorFactory",
    "Outcome",
    "PermanentError",
    "Result",
    "TransientError",
    "available",
    "build",
]


def available() -> dict[str, str]:
    """Connector type -> where it comes from (for `scimjit apps list` and error messages)."""
    out = {name: "built-in" for name in BUILTIN}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        out.setdefault(ep.name, ep.value)
    return out


def factory(type_name: str) -> ConnectorFactory:
    if type_name in BUILTIN:
        return BUILTIN[type_name]
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=type_name):
        loaded = ep.load()
        if not callable(loaded):
            raise ConfigError(f"entry point {ep.value!r} of connector {type_name!r} is not callable")
        return loaded
    raise ConfigError(f"unknown connector type {type_name!r}; available: {', '.join(sorted(available()))}")


def build(app: Application) -> Connector:
    """The connector of one application, with its settings checked (ConfigError otherwise)."""
    try:
        make = factory(app.connector.type)
    except ConfigError as exc:
        raise ConfigError(f"application {app.name!r}: {exc}") from None
    connector = make(app.connector.settings, app.name)
    missing = [m for m in _REQUIRED if not callable(getattr(connector, m, None))]
    if missing:
        raise ConfigError(
            f"application {app.name!r}: connector {app.connector.type!r} lacks {', '.join(missing)}"
        )
    return connector


_REQUIRED = (
    "create_account",
    "update_account",
    "disable_account",
    "enable_account",
    "delete_account",
    "grant",
    "revoke",
)  # `notify` and `reconcile` are optional (see base.py)

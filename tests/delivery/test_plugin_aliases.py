"""Connector plugins and webhook receivers written against 0.1 import from `scimjit.jit...`: those paths stay
aliases of the new ones (docs/connectors.md), the same objects, not copies."""

from __future__ import annotations


def test_the_01_import_paths_name_the_same_objects() -> None:
    from scimjit.config import ConfigError
    from scimjit.delivery import connectors
    from scimjit.delivery.connectors import base, webhook
    from scimjit.jit import connectors as old
    from scimjit.jit.connectors import base as old_base
    from scimjit.jit.connectors import webhook as old_webhook
    from scimjit.jit.settings import ConfigError as OldConfigError

    for name in ("Call", "Outcome", "Result", "Connector", "PermanentError", "TransientError"):
        assert getattr(old, name) is getattr(connectors, name), name
    assert old_base.ROLE_GRANT == base.ROLE_GRANT and old_base.Call is base.Call
    assert old_webhook.verify_signature is webhook.verify_signature
    assert OldConfigError is ConfigError

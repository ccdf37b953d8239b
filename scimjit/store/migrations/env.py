"""Alembic environment: runs against the connection handed in by scimjit.store.migrate."""

from __future__ import annotations

from alembic import context

from scimjit.store.migrate import comparison_options
from scimjit.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached when alembic is run by hand
    raise RuntimeError("run migrations through `scimjit db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    **comparison_options(connection.dialect.name),
)
with context.begin_transaction():
    context.run_migrations()

"""Group memberships: one row per (group, member, source); effective membership = any live source.

A row is live while `expires_at` is NULL or in the future. Every read applies `live(now)`, so an expired
membership disappears at the instant of expiry even if the sweeper is late.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from scimjit.store.tables import memberships

SCIM_SOURCE = "scim"


def live(now_micros: int | sa.BindParameter[Any], table: sa.Table = memberships) -> sa.ColumnElement[bool]:
    """Rows not expired at `now_micros` (a value, or a bind parameter in statements built once)."""
    return sa.or_(table.c.expires_at.is_(None), table.c.expires_at > now_micros)

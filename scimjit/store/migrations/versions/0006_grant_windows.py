"""grants carry their policy's windows and the next window start

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:41:09

`grants.windows` (the policy's `windows`, copied when the grant is made; NULL for a grant without windows,
which is every grant made before this revision) and `grants.window_opens_at` (the next window start, when
the sweeper adds the grant's membership row back; indexed for the sweeper's range scan). Additive only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "windows",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("window_opens_at", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_grants_window_opens_at"), ["window_opens_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grants_window_opens_at"))
        batch_op.drop_column("window_opens_at")
        batch_op.drop_column("windows")

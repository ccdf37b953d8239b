"""signin states and used-once values

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 01:01:42.973112
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "signin_states",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=160), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_signin_states")),
    )
    with op.batch_alter_table("signin_states", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signin_states_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "used_once",
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("value_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("purpose", "value_hash", name=op.f("pk_used_once")),
    )
    with op.batch_alter_table("used_once", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_used_once_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("used_once", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_used_once_expires_at"))

    op.drop_table("used_once")
    with op.batch_alter_table("signin_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signin_states_expires_at"))

    op.drop_table("signin_states")

"""Shared Signals: ssf_streams, ssf_subjects, ssf_poll (SSF 1.0 transmitter streams, their subjects, SETs awaiting a poll)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:50:54.154350
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ssf_poll",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("stream_id", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column(
            "claims",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ssf_poll")),
        sa.UniqueConstraint("stream_id", "jti", name=op.f("uq_ssf_poll_stream_id_jti")),
    )
    op.create_table(
        "ssf_streams",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=256), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("endpoint_url", sa.String(length=2048), nullable=True),
        sa.Column("authorization_header", sa.String(length=4096), nullable=True),
        sa.Column(
            "events_requested",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("aud", sa.String(length=512), nullable=False),
        sa.Column("description", sa.String(length=512), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=512), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ssf_streams")),
    )
    with op.batch_alter_table("ssf_streams", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ssf_streams_owner"), ["owner"], unique=False)

    op.create_table(
        "ssf_subjects",
        sa.Column("stream_id", sa.String(length=64), nullable=False),
        sa.Column("subject_key", sa.String(length=1024), nullable=False),
        sa.Column(
            "subject",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("stream_id", "subject_key", name=op.f("pk_ssf_subjects")),
    )
    with op.batch_alter_table("ssf_subjects", schema=None) as batch_op:
        batch_op.create_index("ix_ssf_subjects_subject_key", ["subject_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ssf_subjects", schema=None) as batch_op:
        batch_op.drop_index("ix_ssf_subjects_subject_key")

    op.drop_table("ssf_subjects")
    with op.batch_alter_table("ssf_streams", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ssf_streams_owner"))

    op.drop_table("ssf_streams")
    op.drop_table("ssf_poll")

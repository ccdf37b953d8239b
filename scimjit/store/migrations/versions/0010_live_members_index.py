"""memberships: ix_memberships_group_pk_member_id_expires_at, so that a group's live members are counted from
an index alone

Why: every Group PATCH that names no `attributes` (how Entra, Okta and AWS send each membership change) counts
the group's live members, up to `group_patch_response_max_members` + 1, to choose between 200 with the group
and 204 (`store.groups.members_up_to`). The primary key index (group_pk, member_id, source) lacks
`expires_at`, so each of those 101 entries cost a lookup of its table row: 60-76 µs of a PATCH's ~1 ms on
SQLite (`make bench` W6, issue 13). Read from this index, the count takes 28-30 µs.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 15:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_memberships_group_pk_member_id_expires_at",
        "memberships",
        ["group_pk", "member_id", "expires_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_memberships_group_pk_member_id_expires_at", table_name="memberships")

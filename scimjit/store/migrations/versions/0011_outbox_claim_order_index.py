"""outbox: ix_outbox_status_next_attempt_at becomes ix_outbox_status_next_attempt_at_id, the claim's order

Why: a worker's claim (`delivery.outbox.claim_due`) took the due pending events ordered by id, so PostgreSQL
read every due event through (status, next_attempt_at) and sorted them before its LIMIT; with the head-of-key
check planned from statistics taken while few events were pending, a claim of 64 during a mass expiry took
184 ms at 1,200 pending events and 2.6 s at 10,000 (issue 13). The claim now orders by (next_attempt_at, id),
which this index returns as it is: the scan stops after the `limit` heads it claims, on both databases.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 01:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_status_next_attempt_at_id", "outbox", ["status", "next_attempt_at", "id"], unique=False
    )
    op.drop_index("ix_outbox_status_next_attempt_at", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_status_next_attempt_at", "outbox", ["status", "next_attempt_at"], unique=False)
    op.drop_index("ix_outbox_status_next_attempt_at_id", table_name="outbox")

"""Alert rules name webhook endpoints to notify; quota thresholds are announced once.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("alert_rules", sa.Column("notify", sa.Text(), nullable=True))
    op.create_table(
        "quota_thresholds",
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("quota", sa.String(length=512), nullable=False),
        sa.Column("period_id", sa.String(length=32), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("period_end_us", sa.BigInteger(), nullable=False),
        sa.Column("reached_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "subject", "quota", "period_id", "threshold", name=op.f("pk_quota_thresholds")
        ),
    )
    op.create_index(
        "ix_quota_thresholds_period_end", "quota_thresholds", ["period_end_us"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_quota_thresholds_period_end", table_name="quota_thresholds")
    op.drop_table("quota_thresholds")
    with op.batch_alter_table("alert_rules") as batch_op:
        batch_op.drop_column("notify")

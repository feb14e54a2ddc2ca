"""Live traffic reports: each data-plane worker's per-second aggregates, for control planes
without Redis (see analytics/live.py).

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "live_traffic_reports",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("second", sa.BigInteger(), nullable=False),
        sa.Column("worker", sa.String(length=160), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_live_traffic_reports")),
    )
    op.create_index(
        "ix_live_traffic_reports_second", "live_traffic_reports", ["second"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_live_traffic_reports_second", table_name="live_traffic_reports")
    op.drop_table("live_traffic_reports")

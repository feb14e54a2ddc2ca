"""Certificate expiry notices: the `certificate.expiring` events sent.

See analytics/certificate_expiry.py.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "certificate_expiry_notices",
        sa.Column("certificate", sa.String(length=128), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "certificate", "not_after", name=op.f("pk_certificate_expiry_notices")
        ),
    )


def downgrade() -> None:
    op.drop_table("certificate_expiry_notices")

"""Webhook endpoints a developer team subscribed in the portal: the owning team's id.

See services/portal_webhooks.py and docs/decisions/037.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | Sequence[str] | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("portal_team_id", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_webhook_endpoints_portal_team_id"), ["portal_team_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_endpoints_portal_team_id"))
        batch_op.drop_column("portal_team_id")

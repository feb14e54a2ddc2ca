"""Config versions stored as keyframes and deltas.

A version row holds the whole document (a keyframe) or a delta against the version
before it; `keyframe` names the keyframe a version is rebuilt from. Every existing
row holds its whole document, so each becomes its own keyframe.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("config_versions") as batch:
        batch.add_column(sa.Column("delta", sa.Text(), nullable=True))
        batch.add_column(sa.Column("keyframe", sa.Integer(), nullable=True))
        batch.alter_column("document", existing_type=sa.Text(), nullable=True)
    op.execute("UPDATE config_versions SET keyframe = version")
    with op.batch_alter_table("config_versions") as batch:
        batch.alter_column("keyframe", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    raise NotImplementedError("config history stored as deltas can't be downgraded in place")

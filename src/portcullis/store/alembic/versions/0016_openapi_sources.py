"""OpenAPI sources: the refresh state of URL-imported API descriptions (catalogue/refresh.py).

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "openapi_sources",
        sa.Column("api", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("api", "version", name=op.f("pk_openapi_sources")),
    )
    op.create_index(
        "ix_openapi_sources_next_check_at", "openapi_sources", ["next_check_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_openapi_sources_next_check_at", table_name="openapi_sources")
    op.drop_table("openapi_sources")

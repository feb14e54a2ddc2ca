"""Persisted GraphQL documents: automatic persisted queries and trusted documents.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "graphql_documents",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("trusted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=400), nullable=True),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_graphql_documents")),
    )
    op.create_index(
        "ix_graphql_documents_lru", "graphql_documents", ["trusted", "last_used_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_graphql_documents_lru", table_name="graphql_documents")
    op.drop_table("graphql_documents")

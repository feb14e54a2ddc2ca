"""Config versions and the head pointer.

Revision ID: 0001
Revises:
Create Date: 2026-11-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "config_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(length=256), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("source_version", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_config_versions")),
    )
    head = op.create_table(
        "config_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_config_head_single_row")),
        sa.ForeignKeyConstraint(
            ["version"],
            ["config_versions.version"],
            name=op.f("fk_config_head_version_config_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_config_head")),
    )
    op.bulk_insert(head, [{"id": 1, "version": None, "checksum": None, "updated_at": None}])


def downgrade() -> None:
    op.drop_table("config_head")
    op.drop_table("config_versions")

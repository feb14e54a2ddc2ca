"""Request inspector: capture sessions and their captured exchanges.

See store/inspector_tables.py and docs/decisions/035-request-inspector.md.

Revision ID: 0021
Revises: 0020 (reserved with down_revision 0018; rechained after merging 0019 and 0020 from main)
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "capture_sessions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("route", sa.String(length=128), nullable=False),
        sa.Column("organization_id", sa.String(length=36), nullable=True),
        sa.Column("started_by", sa.String(length=320), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sample_rate", sa.Float(), nullable=False),
        sa.Column("max_count", sa.Integer(), nullable=False),
        sa.Column("captured", sa.Integer(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stop_reason", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_capture_sessions")),
    )
    op.create_index(op.f("ix_capture_sessions_route"), "capture_sessions", ["route"])
    op.create_index(
        op.f("ix_capture_sessions_organization_id"), "capture_sessions", ["organization_id"]
    )
    op.create_index(op.f("ix_capture_sessions_started_at"), "capture_sessions", ["started_at"])
    op.create_table(
        "captured_exchanges",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("route", sa.String(length=128), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("request_headers", sa.Text(), nullable=False),
        sa.Column("response_headers", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("consumer", sa.String(length=256), nullable=True),
        sa.Column("credential_id", sa.String(length=64), nullable=True),
        sa.Column("request_body", sa.LargeBinary(), nullable=True),
        sa.Column("request_body_size", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        sa.Column("response_body_size", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["capture_sessions.id"],
            name=op.f("fk_captured_exchanges_session_id_capture_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_captured_exchanges")),
    )
    op.create_index(
        "ix_captured_exchanges_session_id_id", "captured_exchanges", ["session_id", "id"]
    )
    op.create_index(op.f("ix_captured_exchanges_consumer"), "captured_exchanges", ["consumer"])


def downgrade() -> None:
    op.drop_table("captured_exchanges")
    op.drop_table("capture_sessions")

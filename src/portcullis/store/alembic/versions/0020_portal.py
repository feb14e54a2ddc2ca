"""The developer portal: developers, teams, email tokens, the outbox, applications and
access requests (store/portal_tables.py, docs/decisions/034-developer-portal.md).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "portal_developers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        _when("email_verified_at", nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        _when("locked_until", nullable=True),
        _when("created_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_developers")),
        sa.UniqueConstraint("email", name=op.f("uq_portal_developers_email")),
    )
    op.create_table(
        "portal_teams",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("personal", sa.Boolean(), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_teams")),
    )
    op.create_table(
        "portal_team_members",
        sa.Column("team_id", sa.String(length=36), nullable=False),
        sa.Column("developer_id", sa.String(length=36), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        _when("created_at"),
        sa.ForeignKeyConstraint(
            ["developer_id"],
            ["portal_developers.id"],
            name=op.f("fk_portal_team_members_developer_id_portal_developers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["portal_teams.id"],
            name=op.f("fk_portal_team_members_team_id_portal_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("team_id", "developer_id", name=op.f("pk_portal_team_members")),
    )
    op.create_index(
        op.f("ix_portal_team_members_developer_id"), "portal_team_members", ["developer_id"]
    )
    op.create_table(
        "portal_email_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("developer_id", sa.String(length=36), nullable=False),
        _when("created_at"),
        _when("expires_at"),
        _when("used_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["developer_id"],
            ["portal_developers.id"],
            name=op.f("fk_portal_email_tokens_developer_id_portal_developers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_portal_email_tokens")),
    )
    op.create_index(
        op.f("ix_portal_email_tokens_developer_id"), "portal_email_tokens", ["developer_id"]
    )
    op.create_table(
        "portal_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _when("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_outbox")),
    )
    op.create_index(op.f("ix_portal_outbox_recipient"), "portal_outbox", ["recipient"])
    op.create_table(
        "portal_applications",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("team_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("client_type", sa.String(length=16), nullable=False),
        sa.Column("consumer", sa.String(length=128), nullable=True),
        sa.Column("organization_id", sa.String(length=36), nullable=True),
        sa.Column("created_by", sa.String(length=36), nullable=False),
        _when("created_at"),
        _when("updated_at"),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["portal_teams.id"],
            name=op.f("fk_portal_applications_team_id_portal_teams"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_applications")),
        sa.UniqueConstraint("consumer", name=op.f("uq_portal_applications_consumer")),
        sa.UniqueConstraint("team_id", "name", name=op.f("uq_portal_applications_team_id")),
    )
    op.create_index(op.f("ix_portal_applications_team_id"), "portal_applications", ["team_id"])
    op.create_table(
        "portal_access_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("application_id", sa.String(length=36), nullable=False),
        sa.Column("team_id", sa.String(length=36), nullable=False),
        sa.Column("api", sa.String(length=128), nullable=False),
        sa.Column("organization", sa.String(length=128), nullable=True),
        sa.Column("organization_id", sa.String(length=36), nullable=True),
        sa.Column("plan", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=36), nullable=False),
        sa.Column("decided_by", sa.String(length=400), nullable=True),
        _when("decided_at", nullable=True),
        _when("created_at"),
        _when("updated_at"),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["portal_applications.id"],
            name=op.f("fk_portal_access_requests_application_id_portal_applications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_access_requests")),
        sa.UniqueConstraint(
            "application_id", "api", name=op.f("uq_portal_access_requests_application_id")
        ),
    )
    op.create_index(
        "ix_portal_access_requests_status",
        "portal_access_requests",
        ["status", "created_at"],
    )
    op.create_index(
        op.f("ix_portal_access_requests_team_id"), "portal_access_requests", ["team_id"]
    )
    op.create_index(
        op.f("ix_portal_access_requests_organization_id"),
        "portal_access_requests",
        ["organization_id"],
    )


def downgrade() -> None:
    op.drop_table("portal_access_requests")
    op.drop_table("portal_applications")
    op.drop_table("portal_outbox")
    op.drop_table("portal_email_tokens")
    op.drop_table("portal_team_members")
    op.drop_table("portal_teams")
    op.drop_table("portal_developers")

"""Tables of the developer portal: developers, their teams, email verification tokens, the
mail outbox, applications and their access requests (migration 0020).

Secrets are never stored: passwords as argon2 hashes (the admin users' hasher),
verification tokens as sha256 digests of high-entropy random values. Every row a
developer may reach hangs off a team (`team_id`), so each portal query scopes to the
developer's memberships (services/portal_apps.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portcullis.store.tables import Base, UTCDateTime


class DeveloperRow(Base):
    """A person who signs in to the developer portal (not an admin user)."""

    __tablename__ = "portal_developers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # Stored lower-cased, so uniqueness ignores case.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    password_hash: Mapped[str] = mapped_column(String(256))
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # "active" | "suspended" (an operator's decision: no sign-in, no portal call).
    status: Mapped[str] = mapped_column(String(16), default="active")
    # The login lockout's counters, as on admin users (services/login_throttle.py).
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TeamRow(Base):
    """A developer's organization on the portal; applications belong to a team."""

    __tablename__ = "portal_teams"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    # The team sign-up made for its developer.
    personal: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TeamMemberRow(Base):
    """A developer's membership of a team, with their role in it (owner | member)."""

    __tablename__ = "portal_team_members"

    team_id: Mapped[str] = mapped_column(
        ForeignKey("portal_teams.id", ondelete="CASCADE"), primary_key=True
    )
    developer_id: Mapped[str] = mapped_column(
        ForeignKey("portal_developers.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EmailTokenRow(Base):
    """A one-time email verification token (its sha256; spent by a conditional UPDATE)."""

    __tablename__ = "portal_email_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    developer_id: Mapped[str] = mapped_column(
        ForeignKey("portal_developers.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OutboxMessageRow(Base):
    """A mail the embedded mail sender kept instead of sending (the portal's outbox view)."""

    __tablename__ = "portal_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recipient: Mapped[str] = mapped_column(String(320), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApplicationRow(Base):
    """A developer team's application: a gateway consumer once an access is approved."""

    __tablename__ = "portal_applications"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    team_id: Mapped[str] = mapped_column(
        ForeignKey("portal_teams.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    # web | mobile | server | partner
    client_type: Mapped[str] = mapped_column(String(16))
    # The gateway consumer (`app-<id>`) once one was created, and its organization.
    consumer: Mapped[str | None] = mapped_column(String(128), unique=True)
    organization_id: Mapped[str | None] = mapped_column(String(36))
    created_by: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AccessRequestRow(Base):
    """An application's request for an API (and plan): pending, approved or rejected."""

    __tablename__ = "portal_access_requests"
    __table_args__ = (
        UniqueConstraint("application_id", "api"),
        Index("ix_portal_access_requests_status", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    application_id: Mapped[str] = mapped_column(
        ForeignKey("portal_applications.id", ondelete="CASCADE")
    )
    # Kept here too, so a developer's query scopes by team without a join.
    team_id: Mapped[str] = mapped_column(String(36), index=True)
    api: Mapped[str] = mapped_column(String(128))
    # The API's organization when the request was made (operators see their own).
    organization: Mapped[str | None] = mapped_column(String(128))
    organization_id: Mapped[str | None] = mapped_column(String(36), index=True)
    plan: Mapped[str | None] = mapped_column(String(128))
    # pending | approved | rejected
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(36))
    decided_by: Mapped[str | None] = mapped_column(String(400))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

"""Tables of the control plane: admin users, their sessions and API tokens, organisations,
failed logins per client address, the audit log and stored idempotent responses.

They share `Base.metadata` with the config tables, so one Alembic history creates
everything (migration 0002). Secrets are never stored: passwords as argon2 hashes,
tokens as sha256 digests of high-entropy random values.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from portcullis.store.tables import Base, UTCDateTime


class OrganizationRow(Base):
    """A tenant; admin users may be limited to one."""

    __tablename__ = "admin_organizations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AdminUserRow(Base):
    """A person who signs in to the control plane."""

    __tablename__ = "admin_users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # Stored lower-cased, so uniqueness ignores case.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    organization_id: Mapped[str | None] = mapped_column(
        ForeignKey("admin_organizations.id", ondelete="RESTRICT")
    )
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LoginFailureRow(Base):
    """Failed logins of one client address in its current window (the per-address lockout).

    In the store, so every control-plane process counts against one number: each
    attempt takes its number here atomically before its password is checked.
    """

    __tablename__ = "admin_login_failures"

    # An IP address (or "unknown" when the server does not know the peer).
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class RefreshTokenRow(Base):
    """One refresh token of a login session; rotation links tokens into a family."""

    __tablename__ = "admin_refresh_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set when the token was exchanged for a new one; presenting it again is reuse.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApiTokenRow(Base):
    """An admin API token for automation: scoped, expiring, revocable, stored hashed."""

    __tablename__ = "admin_api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the token, to recognise it in listings.
    prefix: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"))
    # Space-separated permissions.
    scopes: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BootstrapTokenRow(Base):
    """The one-time token printed on first start, valid until the first admin user exists."""

    __tablename__ = "admin_bootstrap_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AdminSecretRow(Base):
    """Secrets the control plane generates for itself (e.g. the access-token signing key)."""

    __tablename__ = "admin_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEventRow(Base):
    """One mutating admin call. Append-only: nothing updates or deletes these rows."""

    __tablename__ = "admin_audit_events"
    __table_args__ = (
        Index("ix_admin_audit_events_resource", "resource_type", "resource_id"),
        Index("ix_admin_audit_events_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(400), index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(400))
    # JSON: {"before": …, "after": …, "changes": [{"path", "old", "new"}]} with secrets redacted.
    diff: Mapped[str] = mapped_column(Text)
    config_version: Mapped[int | None] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String(128))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    # The organization the event concerns (the resource's, else the caller's); NULL for
    # deployment-wide events, which only admins not limited to an organization read.
    organization_id: Mapped[str | None] = mapped_column(String(36), index=True)


class IdempotencyKeyRow(Base):
    """A POST seen with an Idempotency-Key, and the response to replay for it."""

    __tablename__ = "admin_idempotency_keys"

    # sha256 of (caller, method, path, key): keys are scoped per caller and endpoint.
    scope_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # NULL while the first request is in flight.
    status: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[str | None] = mapped_column(Text)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)

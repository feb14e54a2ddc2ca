"""Tables of outgoing webhooks: endpoints, the messages queued for them (one per event
per endpoint: the transactional outbox), and every delivery attempt.

A message row is written in the same transaction as the event that caused it, so a
crash can never leave a change without its pending deliveries. Workers claim due
messages with a lease (`lease_owner`, `lease_expires_at`); a worker that dies mid-attempt
leaves a lease that expires, and the message is claimed again (at-least-once: the
receiver sees the same `webhook-id`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from portcullis.store.analytics_tables import AutoId
from portcullis.store.tables import Base, UTCDateTime


class WebhookEndpointRow(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str | None] = mapped_column(String(36), index=True)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    # JSON: a list of event-type patterns (`key.*`), and an object of payload filters.
    event_types: Mapped[str] = mapped_column(Text)
    filters: Mapped[str] = mapped_column(Text, default="{}")
    # Deliver only events about this consumer (a consumer's own endpoint).
    consumer: Mapped[str | None] = mapped_column(String(256))
    # The developer-portal team that subscribed it (services/portal_webhooks.py): that
    # team sees and manages it in the portal; None: an operator's endpoint.
    portal_team_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # Sealed with the deployment secret: the signing secrets (JSON list, newest first,
    # each with its expiry) and the custom headers (they often carry credentials).
    secrets_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    headers_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(64))
    rate_limit: Mapped[int | None] = mapped_column(Integer)
    max_concurrency: Mapped[int] = mapped_column(Integer, default=4)
    ordered: Mapped[bool] = mapped_column(Boolean, default=False)
    # Start of the current run of failed attempts (None while deliveries succeed).
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookMessageRow(Base):
    """One event queued for one endpoint; its id is the `webhook-id` every attempt sends."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        Index("ix_webhook_messages_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    # No foreign key: event retention may drop the event before its deliveries are done.
    event_id: Mapped[int] = mapped_column(BigInteger, index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    # The exact body sent (and signed) on every attempt.
    payload: Mapped[str] = mapped_column(Text)
    # pending | delivered | failed (dead-lettered after the last attempt) | cancelled
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookAttemptRow(Base):
    """One attempt: when, what came back (or why nothing did), and how long it took."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_messages.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[str] = mapped_column(String(40), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    # scheduled | replay | test
    trigger: Mapped[str] = mapped_column(String(16))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(32))
    latency_ms: Mapped[float] = mapped_column(Float)
    response_excerpt: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    detail: Mapped[str] = mapped_column(Text, default="")

"""Tables of the web applications (dashboard and portal): their server-side sessions.

A browser holds only a random session token in an HttpOnly cookie; the store keeps
its SHA-256 digest, so a copy of the store signs nobody in (services/web_sessions.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from portcullis.store.tables import Base, UTCDateTime


class WebSessionRow(Base):
    """One signed-in browser: an admin on the dashboard or a developer on the portal."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_subject", "kind", "subject_id"),)

    # Public id (the `session_id` of the caller; never a credential).
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # "admin" (dashboard) or "developer" (portal).
    kind: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(36))
    # The synchronizer token every state-changing request of the session must echo.
    csrf_token: Mapped[str] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Absolute end; the idle end is last_seen_at + the service's idle timeout.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

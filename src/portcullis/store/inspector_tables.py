"""Tables of the request inspector: capture sessions and the exchanges they recorded.

A session is an operator's opt-in capture on one route (a time box, a sample rate, a
maximum count); it is its own row, not a config version. Its exchanges are written
by the data-plane workers in batches (proxy/inspector.py), already redacted, bodies
cut at 1 KiB; deleting a session deletes its exchanges (ON DELETE CASCADE, and the
retention job deletes exchanges first on stores that do not enforce it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portcullis.store.analytics_tables import AutoId
from portcullis.store.tables import Base, UTCDateTime


class CaptureSessionRow(Base):
    __tablename__ = "capture_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    route: Mapped[str] = mapped_column(String(128), index=True)
    # The route's organization when the capture started (None: the route has none).
    organization_id: Mapped[str | None] = mapped_column(String(36), index=True)
    started_by: Mapped[str] = mapped_column(String(320))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sample_rate: Mapped[float] = mapped_column(Float)
    max_count: Mapped[int] = mapped_column(Integer)
    # Exchanges stored so far (the writers stop at max_count).
    captured: Mapped[int] = mapped_column(Integer, default=0)
    # Set when it ended before its time box: stopped by an operator, or full.
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    stop_reason: Mapped[str | None] = mapped_column(String(16))


class CapturedExchangeRow(Base):
    __tablename__ = "captured_exchanges"
    __table_args__ = (Index("ix_captured_exchanges_session_id_id", "session_id", "id"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("capture_sessions.id", ondelete="CASCADE")
    )
    route: Mapped[str] = mapped_column(String(128))
    captured_at: Mapped[datetime] = mapped_column(UTCDateTime())
    request_id: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    query: Mapped[str] = mapped_column(Text)
    # JSON lists of [name, value] pairs, credential values already redacted.
    request_headers: Mapped[str] = mapped_column(Text)
    response_headers: Mapped[str] = mapped_column(Text)
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    consumer: Mapped[str | None] = mapped_column(String(256), index=True)
    credential_id: Mapped[str | None] = mapped_column(String(64))
    # The first 1 KiB of each body and the size seen (None: the body was not read).
    request_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    request_body_size: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    response_body_size: Mapped[int | None] = mapped_column(Integer)

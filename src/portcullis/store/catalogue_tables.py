"""The catalogue's own state: how each URL-imported OpenAPI description is being kept
fresh (catalogue/refresh.py). The descriptions themselves live in the config."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portcullis.store.tables import Base, UTCDateTime


class OpenApiSourceRow(Base):
    """One API version's `openapi_source`: when it is next due (claiming a due row moves
    this forward, so one control-plane node fetches it), the last attempt and success,
    the digest of the description last applied, and the last error (None after a
    success). A failed fetch never touches the config: the last good description stays."""

    __tablename__ = "openapi_sources"
    __table_args__ = (Index("ix_openapi_sources_next_check_at", "next_check_at"),)

    api: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    next_check_at: Mapped[datetime] = mapped_column(UTCDateTime)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)

"""Tables of the GraphQL admin API: its persisted documents.

A document is stored under the lowercase hex SHA-256 of its exact text (UTF-8), the
key Apollo's automatic persisted queries use. `trusted` documents are the ones an
operator registered (`portcullis graphql documents add`): they are never evicted and
are the only ones that run in trusted-documents-only mode. The others were registered
by requests (APQ) and are a bounded cache: past the cap, the least recently used go.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portcullis.store.tables import Base, UTCDateTime


class GraphQLDocumentRow(Base):
    __tablename__ = "graphql_documents"
    # Eviction reads the untrusted documents least recently used first.
    __table_args__ = (Index("ix_graphql_documents_lru", "trusted", "last_used_at"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    document: Mapped[str] = mapped_column(Text)
    # UTF-8 bytes of `document` (listings show it without reading the text).
    size: Mapped[int] = mapped_column(Integer)
    trusted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Refreshed when the document is read by hash, at most once a minute or so.
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Who registered it, named as the audit log names actors (`user:…`, `cli:…`; as
    # wide as its column); None when no operation was given.
    created_by: Mapped[str | None] = mapped_column(String(400))

"""Declarative table models. Alembic migrations (store/alembic/versions) create them.

`config_versions` is an append-only history: every apply or rollback adds a row and
nothing is updated, so history stays linear and auditable. A row holds either the
whole document (a keyframe) or a delta against the version before it; the oldest
rows are pruned by the retention policy (store/config_repository.py).
`config_head` is a single row (id = 1) pointing at the current version. It makes
the data plane's poll a primary-key lookup and gives writers one row to lock
(`SELECT … FOR UPDATE` on PostgreSQL) so concurrent applies get distinct,
increasing version numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
HEAD_ROW_ID = 1


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no timezone type, so values are stored as naive UTC and get their
    timezone back on the way out; PostgreSQL stores `timestamptz`.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a timezone-aware one is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ConfigVersionRow(Base):
    """One stored config version: its document (whole or as a delta) and who/when/why."""

    __tablename__ = "config_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    author: Mapped[str | None] = mapped_column(String(256))
    comment: Mapped[str | None] = mapped_column(Text)
    # sha256 hex of the version's canonical JSON document; equal checksums mean equal configs.
    checksum: Mapped[str] = mapped_column(String(64))
    # The whole canonical JSON document on a keyframe, NULL on a delta row.
    document: Mapped[str | None] = mapped_column(Text)
    # On a delta row: JSON of what changed against version - 1 (model/delta.py).
    delta: Mapped[str | None] = mapped_column(Text)
    # The keyframe this version is rebuilt from (its own number on a keyframe).
    keyframe: Mapped[int] = mapped_column(Integer)
    # Set on a rollback: the version whose document this one restores.
    source_version: Mapped[int | None] = mapped_column(Integer)


class ConfigHeadRow(Base):
    """The single pointer to the current version (`version` is NULL while the store is empty)."""

    __tablename__ = "config_head"
    __table_args__ = (CheckConstraint(f"id = {HEAD_ROW_ID}", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int | None] = mapped_column(ForeignKey("config_versions.version"))
    checksum: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

"""Versioned storage of the gateway config.

Every apply stores the whole config as a canonical JSON document (sorted keys, no
whitespace) with its sha256 checksum, in a new row of an append-only history;
`config_head` points at the current row. A rollback is a new version whose
document equals an old one, so the history reads as what actually happened.

Writers serialise on the head row (`SELECT … FOR UPDATE` on PostgreSQL,
`BEGIN IMMEDIATE` on SQLite), which gives concurrent applies distinct,
increasing version numbers; the version primary key is the backstop, and a
writer that loses a race on it (or on creating the head row) retries.

Read-modify-write callers (the admin API) pass the version they read as
`expected_version`: if another writer, in any process, moved the head since,
`ConfigConflict` is raised inside the locked transaction instead of silently
overwriting that change, and the caller redoes its change on the fresh config.
An `on_write` hook runs further statements (the audit record) in the same
transaction, so the change and its record commit or roll back together.

A version that drops consumers retires their credentials in the same transaction
(identity/consumer_credentials.py), whichever path wrote it. Which consumers were
dropped is known from the config the writer started from (`previous`, pinned by
`expected_version`), or else read from the head's stored document.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.identity.consumer_credentials import retire_credentials
from portcullis.model import GatewayConfig
from portcullis.model.loader import load_config_data
from portcullis.store.config_head import ConfigConflict as ConfigConflict  # re-exported
from portcullis.store.engine import single_read_engine, write_transaction
from portcullis.store.errors import NotFound
from portcullis.store.tables import HEAD_ROW_ID, ConfigHeadRow, ConfigVersionRow

_WRITE_ATTEMPTS = 5
_VERSION_COLUMNS = select(*ConfigVersionRow.__table__.c)
_SUMMARY_COLUMNS = (
    ConfigVersionRow.version,
    ConfigVersionRow.created_at,
    ConfigVersionRow.author,
    ConfigVersionRow.comment,
    ConfigVersionRow.checksum,
    ConfigVersionRow.source_version,
)


@dataclass(frozen=True, slots=True)
class ConfigVersionSummary:
    """A version's metadata, without its document (for listings)."""

    version: int
    created_at: datetime
    author: str | None
    comment: str | None
    checksum: str
    source_version: int | None = None


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """A stored config version.

    `source_version` is set on versions made by a rollback (the version restored).
    `created` is False only on a result of `apply`/`rollback` that found the config
    identical to the current one and therefore stored nothing.
    """

    version: int
    created_at: datetime
    author: str | None
    comment: str | None
    checksum: str
    config: GatewayConfig
    source_version: int | None = None
    created: bool = True


@dataclass(frozen=True, slots=True)
class ConfigHead:
    """Where the head points (version 0 while the store is empty) and when it moved there."""

    version: int
    updated_at: datetime | None


# Runs inside the write transaction of an apply or rollback, after the version (if any)
# is written; raising rolls the whole transaction back.
OnWrite = Callable[[AsyncConnection, "ConfigVersion"], Awaitable[None]]


def canonical_json(config: GatewayConfig) -> str:
    """The stored form of a config: equal configs give equal strings (and checksums)."""
    return json.dumps(config.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def checksum_of(document: str) -> str:
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


class ConfigRepository:
    """Config versions in the store behind `engine` (the schema must be migrated)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Every read below is one statement, consistent on its own: no transaction needed.
        self._reader = single_read_engine(engine)
        self._version_query = select(ConfigHeadRow.version).where(ConfigHeadRow.id == HEAD_ROW_ID)

    async def current_version(self) -> int:
        """The current version number, 0 when nothing was ever applied (one primary-key read)."""
        async with self._reader.connect() as conn:
            version = await conn.scalar(self._version_query)
        return version or 0

    async def head(self) -> ConfigHead:
        """The current version number and the time it became current (one primary-key read)."""
        query = select(ConfigHeadRow.version, ConfigHeadRow.updated_at).where(
            ConfigHeadRow.id == HEAD_ROW_ID
        )
        async with self._reader.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.version is None:
            return ConfigHead(0, None)
        return ConfigHead(row.version, row.updated_at)

    async def current(self) -> ConfigVersion | None:
        """The current version with its config, or None when the store is empty."""
        query = _VERSION_COLUMNS.join_from(
            ConfigVersionRow, ConfigHeadRow, ConfigHeadRow.version == ConfigVersionRow.version
        )
        async with self._reader.connect() as conn:
            row = (await conn.execute(query.where(ConfigHeadRow.id == HEAD_ROW_ID))).first()
        return None if row is None else _to_version(row)

    async def get(self, version: int) -> ConfigVersion:
        """One version; raises `NotFound` if there is no such version."""
        query = _VERSION_COLUMNS.where(ConfigVersionRow.version == version)
        async with self._reader.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"config version {version} does not exist")
        return _to_version(row)

    async def list_versions(
        self, limit: int = 50, before: int | None = None
    ) -> list[ConfigVersionSummary]:
        """Newest first, at most `limit`, only versions below `before` when given (paging)."""
        query = select(*_SUMMARY_COLUMNS).order_by(ConfigVersionRow.version.desc()).limit(limit)
        if before is not None:
            query = query.where(ConfigVersionRow.version < before)
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ConfigVersionSummary(*row) for row in rows]

    async def apply(
        self,
        config: GatewayConfig,
        *,
        author: str | None,
        comment: str | None,
        expected_version: int | None = None,
        on_write: OnWrite | None = None,
        previous: GatewayConfig | None = None,
    ) -> ConfigVersion:
        """Store `config` as the new current version, atomically.

        When it is identical to the current config nothing is stored and the current
        version is returned with `created=False`. With `expected_version`, raises
        `ConfigConflict` unless the head is still at that version (0: empty store);
        `previous` may then give that version's config (it saves reading it back).
        `on_write` runs in the same transaction, also when nothing was stored.
        """
        return await self._store(
            config,
            author=author,
            comment=comment,
            source_version=None,
            expected_version=expected_version,
            on_write=on_write,
            previous=previous,
        )

    async def rollback(
        self,
        to_version: int,
        *,
        author: str | None,
        comment: str | None = None,
        expected_version: int | None = None,
        on_write: OnWrite | None = None,
        previous: GatewayConfig | None = None,
    ) -> ConfigVersion:
        """Make the config of `to_version` current again, as a new version.

        The old document is validated against today's schema first, so a rollback
        can't install a config this release can't serve. Raises `NotFound` for an
        unknown version and `ConfigError` for a document that no longer validates;
        `expected_version`, `on_write` and `previous` work as for `apply`.
        """
        target = await self.get(to_version)
        return await self._store(
            target.config,
            author=author,
            comment=comment if comment is not None else f"rollback to version {to_version}",
            source_version=to_version,
            expected_version=expected_version,
            on_write=on_write,
            previous=previous,
        )

    async def _store(
        self,
        config: GatewayConfig,
        *,
        author: str | None,
        comment: str | None,
        source_version: int | None,
        expected_version: int | None,
        on_write: OnWrite | None,
        previous: GatewayConfig | None = None,
    ) -> ConfigVersion:
        document = canonical_json(config)
        checksum = checksum_of(document)
        attempt = 0
        while True:
            attempt += 1
            in_hook = False
            try:
                async with write_transaction(self._engine) as conn:
                    stored = await self._store_locked(
                        conn,
                        config,
                        document,
                        checksum,
                        author,
                        comment,
                        source_version,
                        expected_version,
                        previous if expected_version is not None else None,
                    )
                    if on_write is not None:
                        in_hook = True
                        await on_write(conn, stored)
                    return stored
            except IntegrityError:
                # Lost a race on the version key or on creating the head row: go again.
                # The hook's own integrity errors are its caller's to handle.
                if in_hook or attempt >= _WRITE_ATTEMPTS:
                    raise

    async def _store_locked(
        self,
        conn: AsyncConnection,
        config: GatewayConfig,
        document: str,
        checksum: str,
        author: str | None,
        comment: str | None,
        source_version: int | None,
        expected_version: int | None,
        previous: GatewayConfig | None,
    ) -> ConfigVersion:
        head_query = (
            select(ConfigHeadRow.version, ConfigHeadRow.checksum)
            .where(ConfigHeadRow.id == HEAD_ROW_ID)
            .with_for_update()
        )
        head = (await conn.execute(head_query)).first()
        if expected_version is not None:
            current = head.version if head is not None and head.version is not None else 0
            if current != expected_version:
                raise ConfigConflict(expected_version, current)
        if head is not None and head.version is not None and head.checksum == checksum:
            query = _VERSION_COLUMNS.where(ConfigVersionRow.version == head.version)
            return _to_version((await conn.execute(query)).one(), config=config, created=False)
        latest = await conn.scalar(select(func.max(ConfigVersionRow.version)))
        version = (latest or 0) + 1
        now = datetime.now(UTC)
        await conn.execute(
            insert(ConfigVersionRow).values(
                version=version,
                created_at=now,
                author=author,
                comment=comment,
                checksum=checksum,
                document=document,
                source_version=source_version,
            )
        )
        values = {"version": version, "checksum": checksum, "updated_at": now}
        if head is None:
            await conn.execute(insert(ConfigHeadRow).values(id=HEAD_ROW_ID, **values))
        else:
            await conn.execute(
                update(ConfigHeadRow).where(ConfigHeadRow.id == HEAD_ROW_ID).values(**values)
            )
        if head is not None and head.version is not None:
            before = (
                {c.username for c in previous.consumers}
                if previous is not None
                else await _usernames_at(conn, head.version)
            )
            kept = {c.username for c in config.consumers}
            await retire_credentials(conn, sorted(before - kept), version=version)
        return ConfigVersion(version, now, author, comment, checksum, config, source_version)


async def _usernames_at(conn: AsyncConnection, version: int) -> set[str]:
    """The consumer usernames of a stored version (its document is parsed, not validated)."""
    query = select(ConfigVersionRow.document).where(ConfigVersionRow.version == version)
    document = json.loads(await conn.scalar(query) or "{}")
    return {str(c["username"]) for c in document.get("consumers", [])}


def _to_version(
    r: Row[Any], *, config: GatewayConfig | None = None, created: bool = True
) -> ConfigVersion:
    if config is None:
        config = load_config_data(json.loads(r.document), source=f"config version {r.version}")
    return ConfigVersion(
        version=r.version,
        created_at=r.created_at,
        author=r.author,
        comment=r.comment,
        checksum=r.checksum,
        config=config,
        source_version=r.source_version,
        created=created,
    )

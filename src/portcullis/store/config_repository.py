"""Versioned storage of the gateway config.

Every apply stores a new row of an append-only history; `config_head` points at the
current row. A version's document is the config's canonical JSON (sorted keys, no
whitespace) and its sha256 `checksum` identifies the content. A rollback is a new
version whose document equals an old one, so the history reads as what actually
happened.

Rows hold either the whole document (a keyframe) or a delta against the version
before it (model/delta.py: which slice of which entity list changed). A
one-field edit of a 50,000-consumer config therefore stores one consumer, not the
document. A version is rebuilt from its keyframe by applying the deltas after it;
a new keyframe is written when the deltas since the last one add up to more than
a whole document, or there are `MAX_CHAIN` of them, so rebuilding reads at most
about twice a document. The last document this repository wrote or rebuilt is
kept in memory, so the next write computes its delta without reading anything.

Retention: with `keep_versions` = N, the newest N versions are always kept, and at
most 2N - 1. Each write deletes the versions before the keyframe the oldest kept
version is rebuilt from; once N versions have piled up between that keyframe and
the oldest kept version, the latter is rewritten as a keyframe and everything
before it is deleted (one document write per N versions). A rollback to a pruned
version is `NotFound`.

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
dropped is known from the document the writer started from (`previous`, pinned by
`expected_version`), or else from the head's stored document. The same transaction
records the version's events (events/config_events.py): `config.applied`, and
`consumer.created` for every consumer it adds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.events.config_events import record_version_events
from portcullis.identity.consumer_credentials import retire_credentials
from portcullis.model import GatewayConfig
from portcullis.model.bulk import gc_paused
from portcullis.model.canonical_text import DocumentText
from portcullis.model.canonical_text import canonical_text as canonical_text  # re-exported
from portcullis.model.canonical_text import checksum_of as checksum_of  # re-exported
from portcullis.model.delta import (
    Document,
    apply_delta,
    compute_delta,
    consumers_changed,
    revalidate,
)
from portcullis.model.loader import load_config_data
from portcullis.store.config_head import ConfigConflict as ConfigConflict  # re-exported
from portcullis.store.engine import single_read_engine, write_transaction
from portcullis.store.errors import NotFound
from portcullis.store.sealing import seal_document, sealed_config
from portcullis.store.tables import HEAD_ROW_ID, ConfigHeadRow, ConfigVersionRow

_WRITE_ATTEMPTS = 5
# At most this many deltas follow a keyframe (bounds the work of rebuilding a version).
MAX_CHAIN = 1000
# A keyframe also stores its delta when that is at most 1/16 of the document.
_KEYFRAME_DELTA_SHARE = 16
# Versions kept by default (the newest); 0 keeps every version.
DEFAULT_KEEP_VERSIONS = 100
_META_COLUMNS = (
    ConfigVersionRow.version,
    ConfigVersionRow.created_at,
    ConfigVersionRow.author,
    ConfigVersionRow.comment,
    ConfigVersionRow.checksum,
    ConfigVersionRow.source_version,
)
_SUMMARY_COLUMNS = _META_COLUMNS


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
    identical to the current one and therefore stored nothing. `document` is the
    config's canonical document (shared: never mutate it).
    """

    version: int
    created_at: datetime
    author: str | None
    comment: str | None
    checksum: str
    # Not in the repr: a whole config of 50,000 consumers takes seconds to format.
    config: GatewayConfig = field(repr=False)
    source_version: int | None = None
    created: bool = True
    document: Document | None = field(default=None, repr=False)


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
    return canonical_text(config.canonical())


class ConfigRepository:
    """Config versions in the store behind `engine` (the schema must be migrated).

    `keep_versions` is the retention policy (see the module docstring; 0: keep all).
    """

    def __init__(self, engine: AsyncEngine, *, keep_versions: int = DEFAULT_KEEP_VERSIONS) -> None:
        self._engine = engine
        self.keep_versions = keep_versions
        # Every read below is one statement, consistent on its own: no transaction needed.
        self._reader = single_read_engine(engine)
        self._version_query = select(ConfigHeadRow.version).where(ConfigHeadRow.id == HEAD_ROW_ID)
        # The last document written or rebuilt here, by version (versions never change).
        self._known: tuple[int, Document] | None = None

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

    async def current(
        self, *, base: tuple[GatewayConfig, Document] | None = None
    ) -> ConfigVersion | None:
        """The current version with its config, or None when the store is empty.

        `base` is a config the caller holds (one that validated) and its canonical
        document: the current document is then validated against it (only the entities
        that differ, `model.delta.revalidate`), and validation runs in a worker thread
        so that a long one (another writer replaced the whole config) does not stall the
        caller's event loop."""
        async with self._engine.connect() as conn:
            version = await conn.scalar(self._version_query)
            if version is None:
                return None
            return await self._version(conn, version, base=base)

    async def get(self, version: int) -> ConfigVersion:
        """One version; raises `NotFound` if there is no such version (or it was pruned)."""
        async with self._engine.connect() as conn:
            return await self._version(conn, version)

    async def document(self, version: int) -> Document:
        """One version's canonical document, not validated; `NotFound` if there is none."""
        async with self._engine.connect() as conn:
            return await self._document_at(conn, version)

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
        document: Document | None = None,
        previous_document: Document | None = None,
        text: DocumentText | None = None,
    ) -> ConfigVersion:
        """Store `config` as the new current version, atomically.

        When it is identical to the current config nothing is stored and the current
        version is returned with `created=False`. With `expected_version`, raises
        `ConfigConflict` unless the head is still at that version (0: empty store);
        `previous` (and `previous_document`, its canonical document) may then give
        that version's config, which saves reading it back. `document` is `config`'s
        canonical document when the caller has it, and `text` its canonical text kept in
        parts (the checksum then costs no re-serialisation of unchanged entities).
        `on_write` runs in the same transaction, also when nothing was stored.
        """
        return await self._store(
            config,
            document if document is not None else config.canonical(),
            author=author,
            comment=comment,
            source_version=None,
            expected_version=expected_version,
            on_write=on_write,
            previous=_Previous(previous, previous_document)
            if expected_version is not None
            else None,
            parts=text,
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
        previous_document: Document | None = None,
    ) -> ConfigVersion:
        """Make the config of `to_version` current again, as a new version.

        The old document is validated against today's schema first, so a rollback
        can't install a config this release can't serve. Raises `NotFound` for an
        unknown (or pruned) version and `ConfigError` for a document that no longer
        validates; `expected_version`, `on_write` and `previous` work as for `apply`.
        """
        target = await self.get(to_version)
        assert target.document is not None
        return await self._store(
            target.config,
            target.document,
            author=author,
            comment=comment if comment is not None else f"rollback to version {to_version}",
            source_version=to_version,
            expected_version=expected_version,
            on_write=on_write,
            previous=_Previous(previous, previous_document)
            if expected_version is not None
            else None,
        )

    # ------------------------------------------------------------------ reading

    async def _version(
        self,
        conn: AsyncConnection,
        version: int,
        *,
        base: tuple[GatewayConfig, Document] | None = None,
    ) -> ConfigVersion:
        row = (
            await conn.execute(select(*_META_COLUMNS).where(ConfigVersionRow.version == version))
        ).first()
        if row is None:
            raise NotFound(f"config version {version} does not exist")
        document = await self._document_at(conn, version)
        source = f"config version {version}"
        if base is None:
            config = load_config_data(document, source=source)
            return _to_version(row, config=config, document=document)
        config, canonical = await asyncio.to_thread(_validated, document, base, source)
        return _to_version(row, config=config, document=canonical)

    async def _document_at(self, conn: AsyncConnection, version: int) -> Document:
        """Rebuild `version`'s document: from the one known here by the deltas after it when
        every version in between has one, else from its keyframe."""
        known = self._known
        if known is not None and known[0] == version:
            return known[1]
        if known is not None and known[0] < version:
            rows = (
                await conn.execute(
                    select(ConfigVersionRow.version, ConfigVersionRow.delta)
                    .where(ConfigVersionRow.version.between(known[0] + 1, version))
                    .order_by(ConfigVersionRow.version)
                )
            ).all()
            numbers = [r.version for r in rows]
            if numbers == list(range(known[0] + 1, version + 1)) and all(
                r.delta is not None for r in rows
            ):
                document = known[1]
                for r in rows:
                    document = apply_delta(document, json.loads(r.delta))
                self._known = (version, document)
                return document
        keyframe = await conn.scalar(
            select(ConfigVersionRow.keyframe).where(ConfigVersionRow.version == version)
        )
        if keyframe is None:
            raise NotFound(f"config version {version} does not exist")
        chain = (
            await conn.execute(
                select(ConfigVersionRow.version, ConfigVersionRow.document, ConfigVersionRow.delta)
                .where(ConfigVersionRow.version.between(keyframe, version))
                .order_by(ConfigVersionRow.version)
            )
        ).all()
        if [r.version for r in chain] != list(range(keyframe, version + 1)):
            raise NotFound(f"config version {version} can't be rebuilt: a version is missing")
        rebuilt: Document | None = None
        for link in chain:
            if link.version == keyframe:
                if link.document is None:
                    raise NotFound(f"config version {version} can't be rebuilt: no keyframe")
                with gc_paused():
                    rebuilt = json.loads(link.document)
            elif rebuilt is not None and link.delta is not None:
                rebuilt = apply_delta(rebuilt, json.loads(link.delta))
        assert rebuilt is not None
        self._known = (version, rebuilt)
        return rebuilt

    # ------------------------------------------------------------------ writing

    async def _store(
        self,
        config: GatewayConfig,
        document: Document,
        *,
        author: str | None,
        comment: str | None,
        source_version: int | None,
        expected_version: int | None,
        on_write: OnWrite | None,
        previous: _Previous | None,
        parts: DocumentText | None = None,
    ) -> ConfigVersion:
        sealed = seal_document(document)
        if sealed is not None:
            # Certificate keys are stored encrypted (store/sealing.py); the version this
            # returns carries them sealed too, as every later read of it will.
            document, config = sealed, sealed_config(config)
        # A sealed document is a new object: its text is serialised in full.
        if parts is not None and parts.document is document:
            text = parts.text
        else:
            text = canonical_text(document)
        checksum = checksum_of(text)
        # A version that adds 50,000 consumers builds as many event objects and rows, and
        # the cyclic collector's passes over them took ~0.9 of a 6 CPU-s `config apply`.
        with gc_paused():
            return await self._write(
                _New(config, document, text, checksum),
                author=author,
                comment=comment,
                source_version=source_version,
                expected_version=expected_version,
                on_write=on_write,
                previous=previous,
            )

    async def _write(
        self,
        new: _New,
        *,
        author: str | None,
        comment: str | None,
        source_version: int | None,
        expected_version: int | None,
        on_write: OnWrite | None,
        previous: _Previous | None,
    ) -> ConfigVersion:
        attempt = 0
        while True:
            attempt += 1
            in_hook = False
            try:
                async with write_transaction(self._engine) as conn:
                    stored = await self._store_locked(
                        conn,
                        new,
                        author,
                        comment,
                        source_version,
                        expected_version,
                        previous,
                    )
                    if on_write is not None:
                        in_hook = True
                        await on_write(conn, stored)
                if stored.created:
                    self._known = (stored.version, new.document)
                return stored
            except IntegrityError:
                # Lost a race on the version key or on creating the head row: go again.
                # The hook's own integrity errors are its caller's to handle.
                if in_hook or attempt >= _WRITE_ATTEMPTS:
                    raise

    async def _store_locked(
        self,
        conn: AsyncConnection,
        new: _New,
        author: str | None,
        comment: str | None,
        source_version: int | None,
        expected_version: int | None,
        previous: _Previous | None,
    ) -> ConfigVersion:
        head_query = (
            select(ConfigHeadRow.version, ConfigHeadRow.checksum)
            .where(ConfigHeadRow.id == HEAD_ROW_ID)
            .with_for_update()
        )
        head = (await conn.execute(head_query)).first()
        head_version = head.version if head is not None and head.version is not None else 0
        if expected_version is not None and head_version != expected_version:
            raise ConfigConflict(expected_version, head_version)
        if head is not None and head_version and head.checksum == new.checksum:
            query = select(*_META_COLUMNS).where(ConfigVersionRow.version == head_version)
            row = (await conn.execute(query)).one()
            return _to_version(row, config=new.config, created=False, document=new.document)
        latest = await conn.scalar(select(func.max(ConfigVersionRow.version)))
        version = (latest or 0) + 1
        before: Document | None = None
        if head_version:
            before = (
                previous.document
                if previous is not None and previous.document is not None
                else await self._document_at(conn, head_version)
            )
        values = await self._row_values(conn, new, before, head_version, version)
        now = datetime.now(UTC)
        await conn.execute(
            insert(ConfigVersionRow).values(
                version=version,
                created_at=now,
                author=author,
                comment=comment,
                checksum=new.checksum,
                source_version=source_version,
                **values,
            )
        )
        head_values = {"version": version, "checksum": new.checksum, "updated_at": now}
        if head is None:
            await conn.execute(insert(ConfigHeadRow).values(id=HEAD_ROW_ID, **head_values))
        else:
            await conn.execute(
                update(ConfigHeadRow).where(ConfigHeadRow.id == HEAD_ROW_ID).values(**head_values)
            )
        await self._prune(conn, version)
        if before is not None:
            removed, added = consumers_changed(before, new.document)
            dropped = _usernames(removed) - _usernames(added)
            await retire_credentials(conn, sorted(dropped), version=version)
        await record_version_events(
            conn,
            version=version,
            previous_version=head_version,
            before=before,
            after=new.document,
            author=author,
            comment=comment,
            source_version=source_version,
            checksum=new.checksum,
            now=now,
        )
        return ConfigVersion(
            version,
            now,
            author,
            comment,
            new.checksum,
            new.config,
            source_version,
            document=new.document,
        )

    async def _row_values(
        self,
        conn: AsyncConnection,
        new: _New,
        before: Document | None,
        head_version: int,
        version: int,
    ) -> dict[str, Any]:
        """The storage columns of a new version: a delta when one is worth it, else a keyframe."""
        keyframe_values: dict[str, Any] = {"document": new.text, "delta": None, "keyframe": version}
        if before is None or head_version != version - 1:
            return keyframe_values
        delta = compute_delta(before, new.document)
        if delta is None:
            return keyframe_values
        delta_text = canonical_text(delta)
        keyframe = await conn.scalar(
            select(ConfigVersionRow.keyframe).where(ConfigVersionRow.version == head_version)
        )
        if keyframe is None:
            return keyframe_values
        chain, chain_bytes = (
            await conn.execute(
                select(
                    func.count(), func.coalesce(func.sum(func.length(ConfigVersionRow.delta)), 0)
                ).where(ConfigVersionRow.version > keyframe)
            )
        ).one()
        if chain + 1 > MAX_CHAIN or chain_bytes + len(delta_text) > len(new.text):
            # A keyframe; a small delta is kept beside it, so that readers who hold the
            # version before (every data-plane worker) need not parse the document.
            small = len(delta_text) * _KEYFRAME_DELTA_SHARE <= len(new.text)
            return {**keyframe_values, "delta": delta_text if small else None}
        return {"document": None, "delta": delta_text, "keyframe": keyframe}

    async def _prune(self, conn: AsyncConnection, version: int) -> None:
        """Delete versions the retention policy no longer needs (see the module docstring)."""
        if self.keep_versions <= 0:
            return
        oldest_kept = version - self.keep_versions + 1
        if oldest_kept <= 1:
            return
        keyframe = await conn.scalar(
            select(ConfigVersionRow.keyframe).where(ConfigVersionRow.version == oldest_kept)
        )
        if keyframe is None:
            return
        if oldest_kept - keyframe >= self.keep_versions:
            # The chain behind the oldest kept version has grown as long as the history
            # kept: make that version a keyframe (once per `keep_versions` writes).
            document = await self._document_at(conn, oldest_kept)
            await conn.execute(
                update(ConfigVersionRow)
                .where(ConfigVersionRow.version == oldest_kept)
                .values(document=canonical_text(document), delta=None, keyframe=oldest_kept)
            )
            await conn.execute(
                update(ConfigVersionRow)
                .where(
                    ConfigVersionRow.version > oldest_kept, ConfigVersionRow.keyframe == keyframe
                )
                .values(keyframe=oldest_kept)
            )
            keyframe = oldest_kept
        await conn.execute(delete(ConfigVersionRow).where(ConfigVersionRow.version < keyframe))


@dataclass(frozen=True, slots=True)
class _New:
    """A version about to be stored: its config, canonical document, stored text, checksum."""

    config: GatewayConfig
    document: Document
    text: str
    checksum: str


@dataclass(frozen=True, slots=True)
class _Previous:
    """What the writer knows of the version it expects to replace."""

    config: GatewayConfig | None
    document: Document | None


def _validated(
    document: Document, base: tuple[GatewayConfig, Document], source: str
) -> tuple[GatewayConfig, Document]:
    """`document`'s config and canonical document, validating only what differs from `base`
    when that can vouch for the result (`revalidate`), else all of it."""
    done = revalidate(base[0], base[1], document)
    if done is not None:
        return done
    return load_config_data(document, source=source), document


def _usernames(consumers: list[Any]) -> set[str]:
    return {str(c["username"]) for c in consumers}


def _to_version(
    r: Row[Any] | Any,
    *,
    config: GatewayConfig,
    created: bool = True,
    document: Document | None = None,
) -> ConfigVersion:
    return ConfigVersion(
        version=r.version,
        created_at=r.created_at,
        author=r.author,
        comment=r.comment,
        checksum=r.checksum,
        config=config,
        source_version=r.source_version,
        created=created,
        document=document,
    )

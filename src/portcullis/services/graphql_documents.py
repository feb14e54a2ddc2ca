"""Persisted GraphQL documents: automatic persisted queries (APQ) and trusted documents.

A document is known by the lowercase hex SHA-256 of its exact UTF-8 text. Clients
following Apollo's APQ protocol send `extensions.persistedQuery = {version: 1,
sha256Hash}` without the query; the server answers `PERSISTED_QUERY_NOT_FOUND` until
the client sends hash and query together, which registers the document once it parsed,
passed the limits and validated (so junk never fills the store). `resolve_document`
is that protocol without HTTP; the GraphQL face calls it, executes, then registers.

Documents an operator registers (`portcullis graphql documents add`) are *trusted*:
never evicted, and with `trusted_only` the only ones that run (by hash, or by full
text whose hash is trusted); requests then register nothing. Untrusted (APQ)
documents are a bounded cache: past `max_documents`, the least recently used go.
Eviction was chosen over refusing registrations: a client whose document was evicted
sends it again on the next `PERSISTED_QUERY_NOT_FOUND` (one round trip), while a full
store that refuses would pin yesterday's documents and never persist today's.

`SqlDocumentStore` keeps them in the store, so every control-plane node shares them
(the default wherever the admin API runs); `MemoryDocumentStore` is the same contract
in one process, for tests and tools.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import structlog
from graphql import GraphQLSyntaxError, OperationDefinitionNode, parse
from sqlalchemy import Select, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.services.context import Clock, Operation, utc_now
from portcullis.services.errors import ServiceError, invalid, not_found
from portcullis.settings import Settings
from portcullis.store.engine import dialect_insert, write_transaction
from portcullis.store.graphql_tables import GraphQLDocumentRow

RESOURCE_TYPE = "graphql_document"
DEFAULT_MAX_DOCUMENTS = 10_000
DEFAULT_MAX_BYTES = 64 * 1024
# A document read by hash is marked used at most this often (a write per read would
# make every APQ request a database write).
TOUCH_INTERVAL = timedelta(seconds=60)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Arbitrary constant naming the PostgreSQL advisory lock APQ registrations take.
_APQ_LOCK = 0x70636170_71646F63  # "pcapqdoc"

D = GraphQLDocumentRow
log = structlog.get_logger("portcullis.graphql.documents")


def document_hash(document: str) -> str:
    """The lowercase hex SHA-256 of a document's UTF-8 text (the APQ key).

    A lone surrogate (JSON can carry one) is hashed as is rather than crashing; such
    a text is refused when registered (`register`)."""
    return hashlib.sha256(document.encode("utf-8", "surrogatepass")).hexdigest()


def is_document_hash(value: str) -> bool:
    return _SHA256.match(value) is not None


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """One persisted document and its bookkeeping."""

    sha256: str
    document: str
    size: int
    trusted: bool
    created_at: datetime
    last_used_at: datetime
    created_by: str | None

    def as_json(self, *, text: bool = False) -> dict[str, Any]:
        """For listings and the audit log; the text only when asked for."""
        out: dict[str, Any] = {
            "sha256": self.sha256,
            "trusted": self.trusted,
            "size": self.size,
            "created_at": _time(self.created_at),
            "last_used_at": _time(self.last_used_at),
            "created_by": self.created_by,
        }
        if text:
            out["document"] = self.document
        return out


class DocumentStore(Protocol):
    """Where persisted documents live (`SqlDocumentStore`, `MemoryDocumentStore`)."""

    async def get(self, sha256: str, *, trusted_only: bool = False) -> str | None:
        """The document with this hash (only a trusted one with `trusted_only`), or None;
        marks it used."""
        ...

    async def register(self, document: str, *, trusted: bool, operation: Operation | None) -> str:
        """Store `document` (idempotent) and return its hash. `trusted`: an operator's
        document (an APQ document of the same text becomes trusted; a trusted one never
        becomes untrusted). Audited through `operation` when a trusted document is
        added; APQ registrations are not audited (they are a cache). Raises a
        `ServiceError` for a document over the size limit or not valid UTF-8."""
        ...

    async def trusted(self, sha256: str) -> bool:
        """Whether a trusted document has this hash."""
        ...

    async def list_documents(
        self, *, trusted: bool | None = None, limit: int = 1000
    ) -> list[StoredDocument]:
        """Documents, newest first (`trusted`: only trusted or only APQ ones)."""
        ...

    async def remove(self, sha256: str, *, operation: Operation) -> StoredDocument:
        """Forget a document (audited); not found when there is none."""
        ...


@dataclass(frozen=True, slots=True)
class PersistedQueries:
    """How a GraphQL face treats persisted documents (settings `graphql_apq_*` and
    `graphql_trusted_documents_only`)."""

    apq_enabled: bool = True
    trusted_only: bool = False
    max_documents: int = DEFAULT_MAX_DOCUMENTS
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> PersistedQueries:
        return cls(
            apq_enabled=settings.graphql_apq_enabled,
            trusted_only=settings.graphql_trusted_documents_only,
            max_documents=settings.graphql_apq_max_documents,
            max_bytes=settings.graphql_max_bytes,
        )

    def store(self, engine: AsyncEngine) -> SqlDocumentStore:
        """The shared store of a control plane on `engine`, bounded by these limits."""
        return SqlDocumentStore(engine, max_documents=self.max_documents, max_bytes=self.max_bytes)


# ---------------------------------------------------------------------------- protocol

PersistedQueryCode = Literal[
    "BAD_REQUEST",
    "PERSISTED_QUERY_NOT_FOUND",
    "PERSISTED_QUERY_NOT_SUPPORTED",
    "PERSISTED_QUERY_HASH_MISMATCH",
    "TRUSTED_DOCUMENT_REQUIRED",
    "UNSUPPORTED_PERSISTED_QUERY_VERSION",
]
# The status of each refusal for `application/graphql-response+json` (a response
# without data is a 4xx; GraphQL over HTTP §7.1.2), as the Apollo Router answers them;
# an `application/json` response is 200 whatever the error.
_STATUS: dict[str, int] = {
    "BAD_REQUEST": 400,
    "PERSISTED_QUERY_NOT_FOUND": 404,
    "PERSISTED_QUERY_NOT_SUPPORTED": 400,
    "PERSISTED_QUERY_HASH_MISMATCH": 400,
    "TRUSTED_DOCUMENT_REQUIRED": 403,
    "UNSUPPORTED_PERSISTED_QUERY_VERSION": 400,
}


class PersistedQueryError(Exception):
    """A request the persisted-query rules refuse: `code` goes out as the GraphQL
    error's `extensions.code`, `message` as its message (Apollo clients recognise
    `PersistedQueryNotFound` and `PersistedQueryNotSupported` by message too)."""

    def __init__(self, code: PersistedQueryCode, message: str) -> None:
        super().__init__(message)
        self.code: PersistedQueryCode = code
        self.message = message

    @property
    def status(self) -> int:
        """The HTTP status for an `application/graphql-response+json` response."""
        return _STATUS[self.code]


async def resolve_document(
    query: str | None,
    extensions: Mapping[str, Any] | None,
    store: DocumentStore,
    *,
    trusted_only: bool,
    apq_enabled: bool = True,
) -> tuple[str, str | None]:
    """The document a request runs, and the hash to register once it parsed, passed the
    limits and validated (None: nothing to register).

    - no `persistedQuery`: the query as sent (with `trusted_only`, only if its hash
      is a trusted document's);
    - hash only: the stored document, else `PERSISTED_QUERY_NOT_FOUND` (with
      `trusted_only`: only a trusted one, else `TRUSTED_DOCUMENT_REQUIRED`);
    - hash and query: the hash must be the query's (`PERSISTED_QUERY_HASH_MISMATCH`);
      the query runs and is registered after it validated (never with `trusted_only`,
      where it must already be trusted).

    With APQ off (`apq_enabled=False`, and not `trusted_only`) a `persistedQuery` is
    refused with `PERSISTED_QUERY_NOT_SUPPORTED`. An empty query counts as none.
    """
    query = query or None
    persisted = None if extensions is None else extensions.get("persistedQuery")
    if persisted is None:
        if query is None:
            raise PersistedQueryError(
                "BAD_REQUEST",
                "GraphQL operations must contain a non-empty `query` or a "
                "`persistedQuery` extension",
            )
        if trusted_only and not await store.trusted(document_hash(query)):
            raise _untrusted()
        return query, None
    if not trusted_only and not apq_enabled:
        raise PersistedQueryError("PERSISTED_QUERY_NOT_SUPPORTED", "PersistedQueryNotSupported")
    sha256 = _requested_hash(persisted)
    if query is None:
        if sha256 is not None:
            document = await store.get(sha256, trusted_only=trusted_only)
            if document is not None:
                return document, None
        if trusted_only:
            raise _untrusted()
        raise PersistedQueryError("PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")
    if sha256 != document_hash(query):
        raise PersistedQueryError(
            "PERSISTED_QUERY_HASH_MISMATCH",
            "extensions.persistedQuery.sha256Hash is not the SHA-256 (lowercase hex) of"
            " the query's UTF-8 text",
        )
    if trusted_only:
        if not await store.trusted(sha256):
            raise _untrusted()
        return query, None
    return query, sha256


def _requested_hash(persisted: Any) -> str | None:
    """The hash a `persistedQuery` extension names (None: not 64 hex digits, which no
    document has); refuses any version but 1."""
    if not isinstance(persisted, Mapping):
        raise PersistedQueryError(
            "UNSUPPORTED_PERSISTED_QUERY_VERSION",
            "extensions.persistedQuery must be an object {version: 1, sha256Hash: ...}",
        )
    version = persisted.get("version")
    if type(version) is not int or version != 1:
        raise PersistedQueryError(
            "UNSUPPORTED_PERSISTED_QUERY_VERSION",
            f"unsupported persisted query version {version!r}: only version 1 is",
        )
    sha256 = persisted.get("sha256Hash")
    if not isinstance(sha256, str):
        return None
    sha256 = sha256.lower()
    return sha256 if is_document_hash(sha256) else None


def _untrusted() -> PersistedQueryError:
    return PersistedQueryError(
        "TRUSTED_DOCUMENT_REQUIRED",
        "only trusted documents run on this server: send the hash of a document an"
        " operator registered (portcullis graphql documents add)",
    )


# ---------------------------------------------------------------------------- trusted


def check_document(document: str, *, max_bytes: int | None = None) -> None:
    """Refuse what can never run as a trusted document: text that does not parse as
    GraphQL, or that holds no operation (fragments alone); with `max_bytes`, also one
    the store would refuse (empty, too big, not UTF-8)."""
    if max_bytes is not None:
        _checked_size(document, max_bytes)
    try:
        parsed = parse(document, no_location=True)
    except GraphQLSyntaxError as exc:
        where = ""
        if exc.locations:
            where = f" at line {exc.locations[0].line}, column {exc.locations[0].column}"
        raise invalid([("#/document", f"not a GraphQL document{where}: {exc.message}")]) from None
    if not any(isinstance(d, OperationDefinitionNode) for d in parsed.definitions):
        raise invalid([("#/document", "the document holds no operation (query or mutation)")])


async def add_trusted(
    store: DocumentStore, document: str, operation: Operation
) -> tuple[str, bool]:
    """Register an operator's document as trusted (idempotent, audited); its hash and
    whether it was not trusted before."""
    check_document(document)
    before = await store.trusted(document_hash(document))
    sha256 = await store.register(document, trusted=True, operation=operation)
    return sha256, not before


# ---------------------------------------------------------------------------- stores


class SqlDocumentStore:
    """Documents in the store's `graphql_documents` table, shared by every node."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_documents: int = DEFAULT_MAX_DOCUMENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Clock = utc_now,
        touch_interval: timedelta = TOUCH_INTERVAL,
    ) -> None:
        self._engine = engine
        self._max_documents = max_documents
        self._max_bytes = max_bytes
        self._clock = clock
        self._touch_interval = touch_interval
        self.evicted = 0

    @classmethod
    def from_settings(cls, engine: AsyncEngine, settings: Settings) -> SqlDocumentStore:
        """The store the admin API and the CLI use, bounded as the settings say."""
        return PersistedQueries.from_settings(settings).store(engine)

    async def get(self, sha256: str, *, trusted_only: bool = False) -> str | None:
        sha256 = sha256.lower()
        if not is_document_hash(sha256):
            return None
        statement = select(D.document, D.trusted, D.last_used_at).where(D.sha256 == sha256)
        async with self._engine.connect() as conn:
            row = (await conn.execute(statement)).first()
        if row is None or (trusted_only and not row.trusted):
            return None
        now = self._clock()
        if now - row.last_used_at >= self._touch_interval:
            async with write_transaction(self._engine) as conn:
                await conn.execute(
                    update(D)
                    .where(D.sha256 == sha256, D.last_used_at <= now - self._touch_interval)
                    .values(last_used_at=now)
                )
        return str(row.document)

    async def trusted(self, sha256: str) -> bool:
        sha256 = sha256.lower()
        if not is_document_hash(sha256):
            return False
        statement = select(D.trusted).where(D.sha256 == sha256)
        async with self._engine.connect() as conn:
            return bool((await conn.execute(statement)).scalar())

    async def register(self, document: str, *, trusted: bool, operation: Operation | None) -> str:
        size = _checked_size(document, self._max_bytes)
        sha256 = document_hash(document)
        now = operation.now() if operation is not None else self._clock()
        insert = dialect_insert(self._engine)
        new = insert(D).values(
            sha256=sha256,
            document=document,
            size=size,
            trusted=trusted,
            created_at=now,
            last_used_at=now,
            created_by=None if operation is None else operation.actor,
        )
        async with write_transaction(self._engine) as conn:
            if not trusted and self._engine.dialect.name == "postgresql":
                # Registrations that may evict take turns across every node, so each
                # eviction counts the others' documents and the cap holds exactly
                # (SQLite writers take turns anyway).
                await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _APQ_LOCK})
            created = (await conn.execute(new.on_conflict_do_nothing())).rowcount == 1
            if created and not trusted:
                await self._evict(conn)
            elif not created and trusted:
                promoted = await conn.execute(
                    update(D).where(D.sha256 == sha256, D.trusted.is_(False)).values(trusted=True)
                )
                if promoted.rowcount == 1 and operation is not None:
                    stored = await self._one(conn, sha256)
                    await _audit_trust(operation, stored, created=False, conn=conn)
            elif not created:
                await conn.execute(update(D).where(D.sha256 == sha256).values(last_used_at=now))
            if created and trusted and operation is not None:
                await _audit_trust(
                    operation, await self._one(conn, sha256), created=True, conn=conn
                )
        return sha256

    async def list_documents(
        self, *, trusted: bool | None = None, limit: int = 1000
    ) -> list[StoredDocument]:
        statement: Select[Any] = select(D).order_by(D.created_at.desc(), D.sha256).limit(limit)
        if trusted is not None:
            statement = statement.where(D.trusted.is_(trusted))
        async with self._engine.connect() as conn:
            return [_stored(r) for r in (await conn.execute(statement)).all()]

    async def remove(self, sha256: str, *, operation: Operation) -> StoredDocument:
        sha256 = sha256.lower()
        async with write_transaction(self._engine) as conn:
            row = (await conn.execute(select(D).where(D.sha256 == sha256))).first()
            if row is None:
                raise _not_found(sha256)
            stored = _stored(row)
            await conn.execute(delete(D).where(D.sha256 == sha256))
            await _audit_remove(operation, stored, conn=conn)
        return stored

    async def _evict(self, conn: AsyncConnection) -> None:
        """Past the cap, forget the least recently used untrusted documents."""
        kept = (
            select(D.sha256)
            .where(D.trusted.is_(False))
            .order_by(D.last_used_at.desc(), D.sha256)
            .offset(self._max_documents)
        )
        gone = (await conn.execute(delete(D).where(D.sha256.in_(kept)))).rowcount
        if gone:
            self.evicted += gone
            log.info("graphql.apq.evicted", documents=gone, cap=self._max_documents)

    @staticmethod
    async def _one(conn: AsyncConnection, sha256: str) -> StoredDocument:
        return _stored((await conn.execute(select(D).where(D.sha256 == sha256))).one())


class MemoryDocumentStore:
    """The same contract in one process's memory (tests, tools; not shared by nodes)."""

    def __init__(
        self,
        *,
        max_documents: int = DEFAULT_MAX_DOCUMENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Clock = utc_now,
    ) -> None:
        self._max_documents = max_documents
        self._max_bytes = max_bytes
        self._clock = clock
        self._trusted: dict[str, StoredDocument] = {}
        # Untrusted documents, least recently used first.
        self._cached: OrderedDict[str, StoredDocument] = OrderedDict()
        self.evicted = 0

    async def get(self, sha256: str, *, trusted_only: bool = False) -> str | None:
        sha256 = sha256.lower()
        if sha256 in self._trusted:
            return self._touch(self._trusted, sha256).document
        if trusted_only or sha256 not in self._cached:
            return None
        self._cached.move_to_end(sha256)
        return self._touch(self._cached, sha256).document

    async def trusted(self, sha256: str) -> bool:
        return sha256.lower() in self._trusted

    async def register(self, document: str, *, trusted: bool, operation: Operation | None) -> str:
        size = _checked_size(document, self._max_bytes)
        sha256 = document_hash(document)
        now = operation.now() if operation is not None else self._clock()
        if sha256 in self._trusted:
            return sha256
        cached = self._cached.get(sha256)
        if not trusted:
            if cached is not None:
                self._cached.move_to_end(sha256)
                self._touch(self._cached, sha256)
                return sha256
            self._cached[sha256] = StoredDocument(
                sha256, document, size, False, now, now, _actor(operation)
            )
            while len(self._cached) > self._max_documents:
                self._cached.popitem(last=False)
                self.evicted += 1
            return sha256
        if cached is not None:
            stored = replace(self._cached.pop(sha256), trusted=True)
        else:
            stored = StoredDocument(sha256, document, size, True, now, now, _actor(operation))
        self._trusted[sha256] = stored
        if operation is not None:
            await _audit_trust(operation, stored, created=cached is None)
        return sha256

    async def list_documents(
        self, *, trusted: bool | None = None, limit: int = 1000
    ) -> list[StoredDocument]:
        chosen = [
            d
            for d in (*self._trusted.values(), *self._cached.values())
            if trusted is None or d.trusted == trusted
        ]
        chosen.sort(key=lambda d: d.sha256)
        chosen.sort(key=lambda d: d.created_at, reverse=True)
        return chosen[:limit]

    async def remove(self, sha256: str, *, operation: Operation) -> StoredDocument:
        sha256 = sha256.lower()
        stored = self._trusted.pop(sha256, None) or self._cached.pop(sha256, None)
        if stored is None:
            raise _not_found(sha256)
        await _audit_remove(operation, stored)
        return stored

    def _touch(self, documents: dict[str, StoredDocument], sha256: str) -> StoredDocument:
        documents[sha256] = replace(documents[sha256], last_used_at=self._clock())
        return documents[sha256]


# ---------------------------------------------------------------------------- shared


def _checked_size(document: str, max_bytes: int) -> int:
    """The UTF-8 size of a document that may be stored; refuses others."""
    try:
        size = len(document.encode("utf-8"))
    except UnicodeEncodeError:
        raise invalid([("#/document", "the document is not valid UTF-8 text")]) from None
    if not document.strip():
        raise invalid([("#/document", "the document is empty")])
    if size > max_bytes:
        raise invalid(
            [("#/document", f"the document has {size} bytes, over the limit of {max_bytes}")]
        )
    return size


async def _audit_trust(
    operation: Operation,
    stored: StoredDocument,
    *,
    created: bool,
    conn: AsyncConnection | None = None,
) -> None:
    await operation.record(
        "create" if created else "trust",
        RESOURCE_TYPE,
        stored.sha256,
        after=stored.as_json(),
        status=201 if created else 200,
        conn=conn,
    )


async def _audit_remove(
    operation: Operation, stored: StoredDocument, *, conn: AsyncConnection | None = None
) -> None:
    await operation.record(
        "delete", RESOURCE_TYPE, stored.sha256, before=stored.as_json(), status=204, conn=conn
    )


def _not_found(sha256: str) -> ServiceError:
    return not_found(f"no GraphQL document has the hash {sha256!r}", target="sha256")


def _stored(row: Any) -> StoredDocument:
    return StoredDocument(
        sha256=row.sha256,
        document=row.document,
        size=row.size,
        trusted=bool(row.trusted),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        created_by=row.created_by,
    )


def _actor(operation: Operation | None) -> str | None:
    return None if operation is None else operation.actor


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")

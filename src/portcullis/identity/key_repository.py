"""API keys in the store: the data plane's lookup and the control plane's lifecycle.

The data plane needs two things, both cheap: `find_by_hash` (one read on the unique
`key_hash` index, for cache misses) and `touch_used` (one batched UPDATE for the
last-used stamps a worker collected). Everything else is the control plane's: create,
list, update, rotate, suspend/resume, revoke, bulk import and export.

Every change that can alter what a data-plane worker caches appends an
`EventKind.KEY` event (subject: the key's hash) in the same transaction, so the
change and its invalidation commit together; workers poll the feed and drop the
cached record within one poll interval. Creation and import append one too: a
worker may hold a negative cache entry for a key that was tried before it existed.

Key hashes never leave this module: `KeyInfo` has no hash, and the only full keys
it returns are the newly generated ones in `CreatedKey` / `Rotation` /
`ImportedKey`, which the caller shows once.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.events.bus import NewEvent, record_event, record_events, rfc3339
from portcullis.events.catalogue import EventType
from portcullis.identity.events import EventKind, append_events
from portcullis.identity.key_admin import (
    IMPORTED_ID_PREFIX,
    MAX_GRACE_SECONDS,
    CreatedKey,
    ImportedKey,
    ImportRejected,
    ImportRow,
    KeyInfo,
    KeySettings,
    KeySpec,
    KeyState,
    Rotation,
    RowError,
    parse_networks,
)
from portcullis.identity.key_records import KeyRecord, KeyStatus, api_version_pins
from portcullis.identity.keys import Environment, generate_key, new_key_id
from portcullis.identity.secrets import ServerSecret
from portcullis.store.config_head import lock_config_head
from portcullis.store.engine import Check, single_read_engine, write_transaction
from portcullis.store.errors import NotFound, StoreError
from portcullis.store.identity_tables import ApiKeyRow
from portcullis.store.organizations import (
    in_organization_named,
    organization_id_of,
    organization_ids_of,
    organization_name,
)

_RECORD_COLUMNS = (
    ApiKeyRow.id,
    ApiKeyRow.consumer,
    ApiKeyRow.name,
    ApiKeyRow.environment,
    ApiKeyRow.scopes,
    ApiKeyRow.status,
    ApiKeyRow.status_reason,
    ApiKeyRow.expires_at,
    ApiKeyRow.grace_until,
    ApiKeyRow.allowed_origins,
    ApiKeyRow.ip_allowlist,
    ApiKeyRow.plan,
    ApiKeyRow.metadata_json,
)
# Every column but the hash, and the organization's current name: what the control plane reads.
_INFO_COLUMNS = (
    *(c for c in ApiKeyRow.__table__.c if c.name != "key_hash"),
    organization_name(ApiKeyRow.organization_id),
)
SORT_FIELDS = ("created_at", "name", "consumer", "expires_at", "last_used_at")
_IMPORT_CHUNK = 1000
_EXPORT_BATCH = 1000
_CONSUMER_CHUNK = 500


class KeyNotFound(NotFound):
    """No key with that id (or not visible to the caller)."""


class KeyConflict(StoreError):
    """The key's current state does not allow the change (e.g. it is revoked)."""


class KeyInvalid(StoreError, ValueError):
    """A value is not acceptable for this key; `field` names it (for a 422 pointer)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidCursor(ValueError):
    """A list cursor that this repository did not issue, or issued for another sort."""


def _now() -> datetime:
    return datetime.now(UTC)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _record(row: Sequence[Any]) -> KeyRecord:
    return KeyRecord(
        id=row[0],
        consumer=row[1],
        name=row[2],
        environment=Environment(row[3]),
        scopes=frozenset(json.loads(row[4])),
        status=KeyStatus(row[5]),
        status_reason=row[6],
        expires_at=_epoch(row[7]),
        grace_until=_epoch(row[8]),
        allowed_origins=frozenset(json.loads(row[9])),
        ip_allowlist=parse_networks(json.loads(row[10])),
        plan=row[11],
        api_versions=api_version_pins(json.loads(row[12])),
    )


def _info(row: Mapping[Any, Any]) -> KeyInfo:
    """Metadata from a row's columns (a result row's `_mapping`, or the values inserted)."""
    return KeyInfo(
        id=row["id"],
        consumer=row["consumer"],
        organization=row.get("organization"),
        organization_id=row["organization_id"],
        name=row["name"],
        environment=Environment(row["environment"]),
        scopes=tuple(json.loads(row["scopes"])),
        allowed_origins=tuple(json.loads(row["allowed_origins"])),
        ip_allowlist=tuple(json.loads(row["ip_allowlist"])),
        plan=row["plan"],
        metadata=json.loads(row["metadata_json"]),
        status=KeyStatus(row["status"]),
        status_reason=row["status_reason"],
        expires_at=row["expires_at"],
        rotated_from=row["rotated_from"],
        replaced_by=row["replaced_by"],
        grace_until=row["grace_until"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_used_at=row["last_used_at"],
    )


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _settings_columns(settings: KeySettings) -> dict[str, Any]:
    return {
        "name": settings.name,
        "scopes": _dump(settings.scopes),
        "expires_at": settings.expires_at.astimezone(UTC) if settings.expires_at else None,
        "allowed_origins": _dump(settings.allowed_origins),
        "ip_allowlist": _dump(settings.ip_allowlist),
        "plan": settings.plan,
        "metadata_json": _dump(settings.metadata),
    }


def require_future(expires_at: datetime | None, now: datetime) -> None:
    """A key can't be created (or re-dated) already expired."""
    if expires_at is not None and expires_at <= now:
        raise KeyInvalid("expires_at", "must be in the future")


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """Conditions on listed/exported keys; None means any."""

    consumer: str | None = None
    # The organization's current name (a filter) and its id (an organization-limited
    # admin's scope); "" as the id matches no key.
    organization: str | None = None
    organization_id: str | None = None
    environment: Environment | None = None
    state: KeyState | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class KeyPage:
    items: list[KeyInfo]
    next_cursor: str | None


def _state_condition(state: KeyState, now: datetime) -> ColumnElement[bool]:
    t = ApiKeyRow
    if state is KeyState.revoked:
        return t.status == KeyStatus.revoked.value
    if state is KeyState.suspended:
        return t.status == KeyStatus.suspended.value
    active = t.status == KeyStatus.active.value
    if state is KeyState.expired:
        return and_(active, t.expires_at <= now)
    unexpired = and_(active, or_(t.expires_at.is_(None), t.expires_at > now))
    if state is KeyState.replaced:
        return and_(unexpired, t.grace_until <= now)
    if state is KeyState.grace:
        return and_(unexpired, t.grace_until > now)
    return and_(unexpired, t.grace_until.is_(None))


def _filtered(query: Select[Any], where: KeyFilter, now: datetime) -> Select[Any]:
    t = ApiKeyRow
    if where.consumer is not None:
        query = query.where(t.consumer == where.consumer)
    if where.organization is not None:
        query = query.where(in_organization_named(t.organization_id, where.organization))
    if where.organization_id is not None:
        query = query.where(t.organization_id == where.organization_id)
    if where.environment is not None:
        query = query.where(t.environment == where.environment.value)
    if where.name is not None:
        query = query.where(t.name == where.name)
    if where.state is not None:
        query = query.where(_state_condition(where.state, now))
    return query


async def revoke_keys_of(
    conn: AsyncConnection, consumers: Sequence[str], reason: str, now: datetime
) -> list[str]:
    """Revoke every key of the consumers that is not revoked yet, in the caller's
    transaction, with a KEY event (cache invalidation) and a `key.revoked` platform
    event each; the revoked key ids."""
    revoked: list[str] = []
    events: list[NewEvent] = []
    live = ApiKeyRow.status != KeyStatus.revoked.value
    for start in range(0, len(consumers), _CONSUMER_CHUNK):
        chunk = list(consumers[start : start + _CONSUMER_CHUNK])
        rows = (
            await conn.execute(
                select(
                    ApiKeyRow.id,
                    ApiKeyRow.key_hash,
                    ApiKeyRow.consumer,
                    ApiKeyRow.name,
                    ApiKeyRow.environment,
                    ApiKeyRow.organization_id,
                )
                .where(ApiKeyRow.consumer.in_(chunk), live)
                .with_for_update()
            )
        ).all()
        if not rows:
            continue
        await conn.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.consumer.in_(chunk), live)
            .values(status=KeyStatus.revoked.value, status_reason=reason, updated_at=now)
        )
        await append_events(conn, [(EventKind.KEY, row.key_hash) for row in rows])
        events += [
            NewEvent(
                EventType.KEY_REVOKED,
                f"key:{row.id}",
                {
                    "key_id": row.id,
                    "consumer": row.consumer,
                    "name": row.name,
                    "environment": str(row.environment),
                    "status": KeyStatus.revoked.value,
                    "reason": reason,
                },
                row.organization_id,
            )
            for row in rows
        ]
        revoked += [row.id for row in rows]
    # Recorded after every chunk's rows are locked: recording takes the event-order lock
    # (held to commit), which must never be held while waiting for a row lock.
    await record_events(conn, events, now=now)
    return revoked


# ---------------------------------------------------------------------------- cursors


def parse_sort_field(sort: str | None) -> tuple[str, bool]:
    """`-created_at` → ("created_at", descending); one field (the id breaks ties)."""
    text = (sort or "-created_at").strip()
    descending = text.startswith("-")
    name = text[1:] if descending else text
    if name not in SORT_FIELDS:
        raise KeyInvalid("sort", f"unknown field {name!r} (allowed: {', '.join(SORT_FIELDS)})")
    return name, descending


def _cursor_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def encode_cursor(field: str, descending: bool, value: Any, key_id: str) -> str:
    sort = ("-" if descending else "") + field
    raw = json.dumps({"s": sort, "v": _cursor_value(value), "id": key_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, field: str, descending: bool) -> tuple[Any, str]:
    """The sort value and id a page ended at; `InvalidCursor` when not one of ours."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidCursor("the cursor is not one this API issued") from None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise InvalidCursor("the cursor is not one this API issued")
    if data.get("s") != ("-" if descending else "") + field:
        raise InvalidCursor("the cursor belongs to another sort order; repeat the same 'sort'")
    value = data.get("v")
    if value is not None and field in ("created_at", "expires_at", "last_used_at"):
        try:
            value = datetime.fromisoformat(str(value))
        except ValueError:
            raise InvalidCursor("the cursor is not one this API issued") from None
        if value.tzinfo is None:
            raise InvalidCursor("the cursor is not one this API issued")
    elif value is not None and not isinstance(value, str):
        raise InvalidCursor("the cursor is not one this API issued")
    return value, data["id"]


def _after(field: str, descending: bool, value: Any, key_id: str) -> ColumnElement[bool]:
    """Rows after (value, id) in `_order`'s order (nulls last ascending, first descending)."""
    column = getattr(ApiKeyRow, field)
    tie = and_(column == value, ApiKeyRow.id > key_id)
    if not descending:
        if value is None:
            return and_(column.is_(None), ApiKeyRow.id > key_id)
        return or_(column.is_(None), column > value, tie)
    if value is None:
        return or_(and_(column.is_(None), ApiKeyRow.id > key_id), column.is_not(None))
    return and_(column.is_not(None), or_(column < value, tie))


def _order(field: str, descending: bool) -> tuple[Any, ...]:
    column = getattr(ApiKeyRow, field)
    if descending:
        return (column.is_(None).desc(), column.desc(), ApiKeyRow.id)
    return (column.is_(None), column, ApiKeyRow.id)


# ---------------------------------------------------------------------------- repository


class KeyRepository:
    """API keys in the store behind `engine` (migrated); `secret` peppers the key hashes."""

    def __init__(
        self,
        engine: AsyncEngine,
        secret: ServerSecret,
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._engine = engine
        self._secret = secret
        self._clock = clock
        self._reader = single_read_engine(engine)
        self._by_hash = select(*_RECORD_COLUMNS).where(ApiKeyRow.key_hash == bindparam("h"))
        stamp = bindparam("stamp", type_=ApiKeyRow.last_used_at.type)
        self._touch = (
            update(ApiKeyRow)
            .where(ApiKeyRow.id == bindparam("key_id"))
            .where(or_(ApiKeyRow.last_used_at.is_(None), ApiKeyRow.last_used_at < stamp))
            .values(last_used_at=stamp)
        )

    # ------------------------------------------------------------------ data plane

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        """The key stored under `key_hash` (one unique-index read), or None."""
        async with self._reader.connect() as conn:
            row = (await conn.execute(self._by_hash, {"h": key_hash})).first()
        return None if row is None else _record(row)

    async def records(self, hashes: Sequence[str] | None = None) -> list[tuple[str, KeyRecord]]:
        """(hash, record) of every key, or of the keys stored under `hashes` (in any
        status): what a hybrid control plane sends its data planes (docs/hybrid.md)."""
        query = select(ApiKeyRow.key_hash, *_RECORD_COLUMNS)
        if hashes is not None:
            query = query.where(ApiKeyRow.key_hash.in_(list(hashes)))
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row[0], _record(row[1:])) for row in rows]

    async def touch_used(self, stamps: dict[str, datetime]) -> None:
        """Move `last_used_at` forward for many keys at once (key id → time of last use).

        One executemany in one transaction; a stamp older than the stored one (another
        worker flushed later) changes nothing.
        """
        if not stamps:
            return
        params = [{"key_id": key_id, "stamp": at} for key_id, at in stamps.items()]
        async with write_transaction(self._engine) as conn:
            await conn.execute(self._touch, params)

    # ------------------------------------------------------------------ reads

    async def get(self, key_id: str) -> KeyInfo:
        """One key's metadata; `KeyNotFound` when there is none."""
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(*_INFO_COLUMNS).where(ApiKeyRow.id == key_id))).first()
        if row is None:
            raise KeyNotFound(f"API key {key_id!r} does not exist")
        return _info(row._mapping)

    async def list_keys(
        self,
        where: KeyFilter = KeyFilter(),
        *,
        limit: int = 50,
        cursor: str | None = None,
        sort: str | None = None,
    ) -> KeyPage:
        """One page of keys (keyset pagination on the sort field, then the id).

        `sort` is one of `SORT_FIELDS`, `-` for descending (default `-created_at`).
        """
        field, descending = parse_sort_field(sort)
        now = self._clock()
        query = _filtered(select(*_INFO_COLUMNS), where, now)
        if cursor:
            value, after_id = decode_cursor(cursor, field, descending)
            query = query.where(_after(field, descending, value, after_id))
        query = query.order_by(*_order(field, descending)).limit(limit + 1)
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        items = [_info(r._mapping) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = encode_cursor(field, descending, getattr(last, field), last.id)
        return KeyPage(items, next_cursor)

    async def keys_of_consumers(
        self, consumers: Sequence[str], where: KeyFilter = KeyFilter(), *, per_consumer: int
    ) -> dict[str, KeyPage]:
        """The first page (newest first, as `list_keys`' default sort) of each consumer's
        matching keys, in ONE statement for all of them (a window function ranks each
        consumer's keys): what a GraphQL loader asks for a page of consumers."""
        if not consumers:
            return {}
        now = self._clock()
        rank = (
            func.row_number()
            .over(partition_by=ApiKeyRow.consumer, order_by=_order("created_at", True))
            .label("key_rank")
        )
        ranked = (
            _filtered(select(*_INFO_COLUMNS, rank), where, now)
            .where(ApiKeyRow.consumer.in_(list(dict.fromkeys(consumers))))
            .subquery()
        )
        query = (
            select(ranked)
            .where(ranked.c.key_rank <= per_consumer + 1)
            .order_by(ranked.c.consumer, ranked.c.key_rank)
        )
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        found: dict[str, list[KeyInfo]] = {c: [] for c in consumers}
        for row in rows:
            found[row.consumer].append(_info(row._mapping))
        pages: dict[str, KeyPage] = {}
        for consumer, items in found.items():
            next_cursor = None
            if len(items) > per_consumer:
                items = items[:per_consumer]
                last = items[-1]
                next_cursor = encode_cursor("created_at", True, last.created_at, last.id)
            pages[consumer] = KeyPage(items, next_cursor)
        return pages

    async def stream_keys(self, where: KeyFilter = KeyFilter()) -> AsyncIterator[KeyInfo]:
        """Every matching key, by id, fetched in batches (for streamed exports)."""
        now = self._clock()
        after = ""
        while True:
            query = (
                _filtered(select(*_INFO_COLUMNS), where, now)
                .where(ApiKeyRow.id > after)
                .order_by(ApiKeyRow.id)
                .limit(_EXPORT_BATCH)
            )
            async with self._reader.connect() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                yield _info(row._mapping)
            if len(rows) < _EXPORT_BATCH:
                return
            after = rows[-1].id

    # ------------------------------------------------------------------ writes

    async def create(
        self,
        consumer: str,
        spec: KeySpec,
        *,
        created_by: str,
        organization: str | None,
        config_version: int | None = None,
    ) -> CreatedKey:
        """Generate and store a new key for `consumer` (the caller checked it exists).

        `organization` is the name of the consumer's organization: the key stores its id,
        looked up in the same transaction (it scopes org-limited admins).
        `config_version` is the config version in which the caller found the consumer:
        `ConfigConflict` if the config changed since (see store/config_head.py).
        """
        now = self._clock()
        require_future(spec.expires_at, now)
        key_id, full_key = generate_key(spec.environment)
        key_hash = self._secret.hash_credential(full_key)
        async with write_transaction(self._engine) as conn:
            await lock_config_head(conn, config_version)
            values = self._new_row(
                key_id,
                key_hash,
                consumer,
                await organization_id_of(conn, organization),
                spec,
                created_by=created_by,
                now=now,
            )
            await conn.execute(insert(ApiKeyRow).values(**values))
            await append_events(conn, [(EventKind.KEY, key_hash)])
            info = await self._read(conn, key_id)
            await _key_event(conn, EventType.KEY_CREATED, info, now)
        return CreatedKey(info, full_key)

    async def update(
        self,
        key_id: str,
        settings: KeySettings | Callable[[KeyInfo], KeySettings],
        *,
        check: Check[KeyInfo] | None = None,
    ) -> KeyInfo:
        """Replace a key's editable settings; revoked keys can't be changed.

        `settings` may be a function of the key as stored (a merge patch), so that
        concurrent partial updates each apply to the other's result; it and `check`
        run on the key locked in the write transaction.
        """
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            current, key_hash = await self._lock(conn, key_id, check)
            if current.status is KeyStatus.revoked:
                raise KeyConflict(f"API key {key_id!r} is revoked and can't be changed")
            if callable(settings):
                settings = settings(current)
            if settings.expires_at != current.expires_at:
                require_future(settings.expires_at, now)
            await conn.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id)
                .values(**_settings_columns(settings), updated_at=now)
            )
            await append_events(conn, [(EventKind.KEY, key_hash)])
            return await self._read(conn, key_id)

    async def rotate(
        self,
        key_id: str,
        *,
        grace_seconds: int,
        created_by: str,
        expires_at: datetime | Literal["keep"] | None = "keep",
        check: Check[KeyInfo] | None = None,
    ) -> Rotation:
        """Issue a successor key with the same consumer and settings.

        The old key names its successor (`replaced_by`) and keeps working for
        `grace_seconds` (0: it stops now). `expires_at` sets the new key's expiry
        (default: the old key's, which must still be in the future). Revoked,
        suspended and already rotated keys can't be rotated.
        """
        if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
            raise KeyInvalid("grace_seconds", f"must be between 0 and {MAX_GRACE_SECONDS}")
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            # The successor is a new credential of the consumer: ordered with its removal.
            await lock_config_head(conn)
            old, old_hash = await self._lock(conn, key_id, check)
            if old.status is not KeyStatus.active:
                raise KeyConflict(f"API key {key_id!r} is {old.status} and can't be rotated")
            if old.replaced_by is not None:
                raise KeyConflict(
                    f"API key {key_id!r} was already rotated; rotate its successor "
                    f"{old.replaced_by!r} instead"
                )
            new_expiry = old.expires_at if expires_at == "keep" else expires_at
            try:
                require_future(new_expiry, now)
            except KeyInvalid:
                raise KeyInvalid(
                    "expires_at",
                    "the key has expired; give the new key an expiry in the future (or none)",
                ) from None
            spec = KeySpec(
                name=old.name,
                environment=old.environment,
                scopes=list(old.scopes),
                expires_at=new_expiry,
                allowed_origins=list(old.allowed_origins),
                ip_allowlist=list(old.ip_allowlist),
                plan=old.plan,
                metadata=dict(old.metadata),
            )
            new_id, full_key = generate_key(old.environment)
            new_hash = self._secret.hash_credential(full_key)
            values = self._new_row(
                new_id,
                new_hash,
                old.consumer,
                old.organization_id,
                spec,
                created_by=created_by,
                now=now,
                rotated_from=key_id,
            )
            await conn.execute(insert(ApiKeyRow).values(**values))
            await conn.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id)
                .values(
                    replaced_by=new_id,
                    grace_until=now + timedelta(seconds=grace_seconds),
                    updated_at=now,
                )
            )
            await append_events(conn, [(EventKind.KEY, old_hash), (EventKind.KEY, new_hash)])
            rotated = Rotation(
                await self._read(conn, key_id), await self._read(conn, new_id), full_key
            )
            await _key_event(
                conn,
                EventType.KEY_ROTATED,
                rotated.old,
                now,
                successor_key_id=new_id,
                grace_until=rfc3339(now + timedelta(seconds=grace_seconds)),
            )
            return rotated

    async def revoke(
        self, key_id: str, reason: str, *, check: Check[KeyInfo] | None = None
    ) -> KeyInfo:
        """Stop a key for good (revocation is final; the record stays for audit)."""
        _, after = await self._set_status(
            key_id,
            KeyStatus.revoked,
            reason,
            allowed_from=(KeyStatus.active, KeyStatus.suspended),
            check=check,
        )
        return after

    async def suspend(
        self, key_id: str, reason: str, *, check: Check[KeyInfo] | None = None
    ) -> KeyInfo:
        """Stop an active key until it is resumed."""
        _, after = await self._set_status(
            key_id, KeyStatus.suspended, reason, allowed_from=(KeyStatus.active,), check=check
        )
        return after

    async def suspend_in(
        self, conn: AsyncConnection, key_id: str, reason: str
    ) -> tuple[KeyInfo, KeyInfo]:
        """`suspend` inside the caller's write transaction; the key before and after.

        The anomaly detector stores an anomaly, the suspension and their events together.
        """
        return await self._set_status(
            key_id, KeyStatus.suspended, reason, allowed_from=(KeyStatus.active,), conn=conn
        )

    async def resume(self, key_id: str, *, check: Check[KeyInfo] | None = None) -> KeyInfo:
        """Let a suspended key work again."""
        _, after = await self._set_status(
            key_id, KeyStatus.active, None, allowed_from=(KeyStatus.suspended,), check=check
        )
        return after

    async def import_keys(
        self,
        rows: Sequence[ImportRow],
        organizations: Mapping[str, str | None],
        *,
        created_by: str,
        dry_run: bool = False,
        on_progress: Callable[[int], None] | None = None,
        config_version: int | None = None,
    ) -> list[ImportedKey]:
        """Store every row in one transaction, or none (`ImportRejected` names the rows).

        `organizations` maps each row's consumer to its organization's name (the caller
        checked the consumers exist, see `check_import_consumers`); keys store the ids.
        Supplied keys are hashed; one already in the store rejects the import. `dry_run` checks
        everything and stores nothing. `on_progress` gets the number of rows stored
        after each chunk. `config_version`: as for `create`.
        """
        now = self._clock()
        errors = [
            RowError(r.row, "expires_at", "must be in the future")
            for r in rows
            if r.spec.expires_at is not None and r.spec.expires_at <= now
        ]
        if errors:
            raise ImportRejected(errors)
        async with write_transaction(self._engine) as conn:
            await lock_config_head(conn, config_version)
            ids = await organization_ids_of(conn, organizations.values())
            prepared: list[tuple[ImportRow, dict[str, Any], str | None]] = []
            for r in rows:
                if r.key is None:
                    key_id, full_key = generate_key(r.spec.environment)
                    key_hash = self._secret.hash_credential(full_key)
                    supplied: str | None = full_key
                else:
                    key_id = r.key_id or IMPORTED_ID_PREFIX + new_key_id()
                    key_hash, supplied = self._secret.hash_credential(r.key), None
                name = organizations.get(r.consumer)
                values = self._new_row(
                    key_id,
                    key_hash,
                    r.consumer,
                    None if name is None else ids.get(name),
                    r.spec,
                    created_by=created_by,
                    now=now,
                )
                prepared.append((r, values, supplied))
            results = [
                ImportedKey(r.row, _info({**v, "organization": organizations.get(r.consumer)}), f)
                for r, v, f in prepared
            ]
            await self._check_not_stored(conn, prepared)
            if dry_run:
                return [ImportedKey(i.row, i.info) for i in results]
            for start in range(0, len(prepared), _IMPORT_CHUNK):
                chunk = [values for _, values, _ in prepared[start : start + _IMPORT_CHUNK]]
                await conn.execute(insert(ApiKeyRow), chunk)
                await append_events(conn, [(EventKind.KEY, v["key_hash"]) for v in chunk])
                if on_progress is not None:
                    on_progress(start + len(chunk))
        return results

    # ------------------------------------------------------------------ internals

    def _new_row(
        self,
        key_id: str,
        key_hash: str,
        consumer: str,
        organization_id: str | None,
        spec: KeySpec,
        *,
        created_by: str,
        now: datetime,
        rotated_from: str | None = None,
    ) -> dict[str, Any]:
        return {
            "id": key_id,
            "key_hash": key_hash,
            "consumer": consumer,
            "organization_id": organization_id,
            "environment": spec.environment.value,
            **_settings_columns(spec),
            "status": KeyStatus.active.value,
            "status_reason": None,
            "rotated_from": rotated_from,
            "replaced_by": None,
            "grace_until": None,
            "created_by": created_by,
            "created_at": now,
            "updated_at": now,
            "last_used_at": None,
        }

    async def _read(self, conn: AsyncConnection, key_id: str) -> KeyInfo:
        row = (await conn.execute(select(*_INFO_COLUMNS).where(ApiKeyRow.id == key_id))).one()
        return _info(row._mapping)

    async def _lock(
        self, conn: AsyncConnection, key_id: str, check: Check[KeyInfo] | None = None
    ) -> tuple[KeyInfo, str]:
        """The key and its hash, locked for the rest of the transaction (FOR UPDATE on PostgreSQL;
        SQLite's write transaction already excludes other writers), after `check` passed on it."""
        row = (
            await conn.execute(
                select(*_INFO_COLUMNS, ApiKeyRow.key_hash)
                .where(ApiKeyRow.id == key_id)
                .with_for_update()
            )
        ).first()
        info = None if row is None else _info(row._mapping)
        if check is not None:
            check(info)
        if row is None or info is None:
            raise KeyNotFound(f"API key {key_id!r} does not exist")
        return info, row.key_hash

    async def _set_status(
        self,
        key_id: str,
        status: KeyStatus,
        reason: str | None,
        *,
        allowed_from: Iterable[KeyStatus],
        conn: AsyncConnection | None = None,
        check: Check[KeyInfo] | None = None,
    ) -> tuple[KeyInfo, KeyInfo]:
        if conn is None:
            async with write_transaction(self._engine) as own:
                return await self._set_status(
                    key_id, status, reason, allowed_from=allowed_from, conn=own, check=check
                )
        now = self._clock()
        current, key_hash = await self._lock(conn, key_id, check)
        if current.status not in tuple(allowed_from):
            raise KeyConflict(f"API key {key_id!r} is {current.status}; it can't be made {status}")
        await conn.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id)
            .values(status=status.value, status_reason=reason, updated_at=now)
        )
        await append_events(conn, [(EventKind.KEY, key_hash)])
        after = await self._read(conn, key_id)
        await _key_event(conn, _STATUS_EVENTS[status], after, now, reason=reason)
        return current, after

    async def _check_not_stored(
        self,
        conn: AsyncConnection,
        prepared: Sequence[tuple[ImportRow, dict[str, Any], str | None]],
    ) -> None:
        """Reject an import whose supplied keys (by hash or id) are already stored."""
        supplied = [(r, v["id"], v["key_hash"]) for r, v, _ in prepared if r.key is not None]
        errors: list[RowError] = []
        for start in range(0, len(supplied), 500):
            chunk = supplied[start : start + 500]
            by_hash = {h: r for r, _, h in chunk}
            by_id = {k: r for r, k, _ in chunk}
            found = (
                await conn.execute(
                    select(ApiKeyRow.id, ApiKeyRow.key_hash).where(
                        or_(
                            ApiKeyRow.key_hash.in_(list(by_hash)) if by_hash else false(),
                            ApiKeyRow.id.in_(list(by_id)) if by_id else false(),
                        )
                    )
                )
            ).all()
            for stored_id, stored_hash in found:
                row = by_hash.get(stored_hash) or by_id.get(stored_id)
                if row is not None:
                    errors.append(RowError(row.row, "key", "this key is already stored"))
        if errors:
            raise ImportRejected(sorted(errors, key=lambda e: e.row))


_STATUS_EVENTS = {
    KeyStatus.revoked: EventType.KEY_REVOKED,
    KeyStatus.suspended: EventType.KEY_SUSPENDED,
    KeyStatus.active: EventType.KEY_RESUMED,
}


async def _key_event(
    conn: AsyncConnection, kind: EventType, info: KeyInfo, now: datetime, **extra: Any
) -> None:
    """The key's platform event, in the transaction that changed the key (so its webhook
    messages commit with the change)."""
    data = {
        "key_id": info.id,
        "consumer": info.consumer,
        "name": info.name,
        "environment": str(info.environment),
        "status": str(info.status),
        **extra,
    }
    await record_event(
        conn, kind, f"key:{info.id}", data, now=now, organization_id=info.organization_id
    )

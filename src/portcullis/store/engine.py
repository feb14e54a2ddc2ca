"""Async engine creation for SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQLite gets WAL (readers never block the writer), foreign keys, a busy timeout
and SQLAlchemy-controlled transactions: the sqlite3 driver's own legacy
transaction handling is switched off and `BEGIN` is emitted by an event hook, so
that a write transaction can ask for `BEGIN IMMEDIATE` (take the write lock up
front instead of failing to upgrade a read lock later). Use `write_transaction`
for any transaction that writes.

A write with a condition (If-Match, "this caller may change it", "not the last
owner") takes the condition as a `Check` and runs it on the current state of what
it changes, read *inside* its write transaction and locked there (`SELECT … FOR
UPDATE` on PostgreSQL; on SQLite `BEGIN IMMEDIATE` already holds the write lock).
A check on a read made before the transaction is a race: two requests read the
same state, both pass, both write, and one update is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import structlog
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from portcullis.store.errors import UnsupportedDatabase

log = structlog.get_logger(__name__)

# Execution option set on a connection before it begins a transaction that writes.
WRITE_OPTION = "portcullis_write"
# Execution option for single-statement reads on SQLite: no BEGIN, the statement runs
# in SQLite's own autocommit mode (consistent on its own), saving two round trips.
SINGLE_READ_OPTION = "portcullis_single_read"
SQLITE_BUSY_TIMEOUT_MS = 15_000

T = TypeVar("T")
# A condition on the current state of what a write changes (None: it is gone), run
# under the write lock in the write's own transaction; it raises to refuse, and the
# write then rolls back.
Check: TypeAlias = Callable[[T | None], None]


def normalize_database_url(url: str | URL) -> URL:
    """Pick the async driver when a URL names none: `postgresql://` → `postgresql+asyncpg://`.

    Raises `UnsupportedDatabase` for other backends.
    """
    u = make_url(url)
    backend, _, driver = u.drivername.partition("+")
    if backend in ("postgres", "postgresql") and driver != "asyncpg":
        return u.set(drivername="postgresql+asyncpg")
    if backend == "sqlite" and driver != "aiosqlite":
        return u.set(drivername="sqlite+aiosqlite")
    if backend not in ("sqlite", "postgresql"):
        raise UnsupportedDatabase(
            f"unsupported database {backend!r}: use sqlite+aiosqlite:///PATH "
            "or postgresql+asyncpg://USER@HOST/DB"
        )
    return u


def is_sqlite(url_or_engine: str | URL | AsyncEngine) -> bool:
    if isinstance(url_or_engine, AsyncEngine):
        return url_or_engine.dialect.name == "sqlite"
    return normalize_database_url(url_or_engine).get_backend_name() == "sqlite"


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a SQLite URL, or None for memory databases and other backends."""
    u = normalize_database_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    database = u.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def single_read_engine(engine: AsyncEngine) -> AsyncEngine:
    """A view of `engine` (same pool) for queries of one statement that need no transaction.

    On PostgreSQL that is autocommit; on SQLite no BEGIN is sent. Either way a poll
    costs one round trip instead of three.
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{SINGLE_READ_OPTION: True})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def single_statement_engine(engine: AsyncEngine) -> AsyncEngine:
    """A view of `engine` for writes that are one statement, atomic on their own (an
    `UPDATE … RETURNING`, an upsert): each commits by itself.

    On SQLite the write lock is then held only while the statement runs in the
    driver's thread, not across the event-loop turns between BEGIN, the statement
    and COMMIT, which a busy process can stretch past other writers' busy timeout.
    """
    return single_read_engine(engine)


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An `AsyncEngine` for `url`, configured for the backend; `kwargs` go to SQLAlchemy.

    For SQLite the parent directory of the database file is created if missing.
    """
    u = normalize_database_url(url)
    if u.get_backend_name() == "sqlite":
        path = sqlite_file(u)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        connect_args: list[Any] = []
        if "creator" not in kwargs and "async_creator" not in kwargs:
            kwargs["async_creator"] = lambda: _connect_sqlite(*connect_args)
        engine = create_async_engine(u, **kwargs)
        connect_args += engine.sync_engine.dialect.create_connect_args(engine.sync_engine.url)
        _configure_sqlite(engine.sync_engine, wal=path is not None)
        return engine
    options: dict[str, Any] = {
        "pool_size": 5,
        "max_overflow": 10,
        # Recycle well before typical server/proxy idle cut-offs.
        "pool_recycle": 1800,
        "connect_args": {"server_settings": {"application_name": "portcullis"}},
    }
    options.update(kwargs)
    return create_async_engine(u, **options)


async def _connect_sqlite(args: list[Any], params: dict[str, Any]) -> Any:
    """aiosqlite's connect (with the arguments SQLAlchemy derives from the URL) that, when
    cancelled, still finishes connecting and closes the connection before re-raising.

    aiosqlite connects in a thread of its own: a connect cancelled half-way (a background
    job's round when the control plane stops right after starting) otherwise leaves that
    thread to post its result to an event loop that may be closed by then."""
    import aiosqlite

    connection = aiosqlite.connect(*args, **params)
    connection._thread.daemon = True  # as SQLAlchemy's own aiosqlite connect does
    pending = asyncio.ensure_future(connection)
    try:
        return await asyncio.shield(pending)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await (await pending).close()
        raise


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Stop the driver from issuing BEGIN itself; `_on_begin` does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
                # Durable at checkpoints and safe against corruption in WAL mode.
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get(SINGLE_READ_OPTION, False):
            return
        connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION) else "BEGIN")


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that will write: committed on success, else rolled back.

    On SQLite it starts with `BEGIN IMMEDIATE`, which serialises writers (waiting up
    to the busy timeout) and rules out lock-upgrade failures. What the transaction
    noted with `note_for_commit` goes to the engine's `on_commit` listeners once it
    has committed (and is dropped if it rolls back).
    """
    lock = _sqlite_writer_lock(engine)
    async with lock if lock is not None else contextlib.nullcontext(), engine.connect() as conn:
        await conn.execution_options(**{WRITE_OPTION: True})
        # `info` belongs to the pooled DB-API connection: nothing an earlier user left.
        # (Only touched on a live connection: after a failure it may be invalidated, and
        # reading `info` then reconnects, which can't be done from async code.)
        conn.info.pop(_COMMIT_NOTES, None)
        async with conn.begin():
            yield conn
        notes: list[object] | None = conn.info.pop(_COMMIT_NOTES, None)
    if notes:
        _notify(engine, notes)


_COMMIT_NOTES = "portcullis.commit_notes"
CommitListener: TypeAlias = Callable[[list[object]], Coroutine[Any, Any, None]]
_COMMIT_LISTENERS: weakref.WeakKeyDictionary[Engine, list[CommitListener]] = (
    weakref.WeakKeyDictionary()
)
_NOTIFYING: set[asyncio.Task[None]] = set()


def on_commit(engine: AsyncEngine, listener: CommitListener) -> Callable[[], None]:
    """Call `listener` with what each committed write transaction of `engine` noted
    (`note_for_commit`), in a task of its own so the writer never waits on it; returns
    the function that removes the listener.

    The event bus listens, so an event any write path records (REST, GraphQL, a job)
    is published once its transaction commits, without each path publishing it.
    """
    listeners = _COMMIT_LISTENERS.setdefault(engine.sync_engine, [])
    listeners.append(listener)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            listeners.remove(listener)

    return remove


def note_for_commit(conn: AsyncConnection, item: object) -> None:
    """Hand `item` to the engine's commit listeners if this write transaction commits."""
    if _COMMIT_LISTENERS.get(conn.engine.sync_engine):
        conn.info.setdefault(_COMMIT_NOTES, []).append(item)


def _notify(engine: AsyncEngine, notes: list[object]) -> None:
    for listener in tuple(_COMMIT_LISTENERS.get(engine.sync_engine, ())):
        task = asyncio.create_task(_listen(listener, notes), name="portcullis-on-commit")
        _NOTIFYING.add(task)
        task.add_done_callback(_NOTIFYING.discard)


async def _listen(listener: CommitListener, notes: list[object]) -> None:
    try:
        await listener(notes)
    except Exception as exc:  # a listener's failure is not the committed writer's
        log.warning("store.commit_listener_failed", error=repr(exc))


_WRITER_LOCKS: weakref.WeakKeyDictionary[Engine, dict[asyncio.AbstractEventLoop, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _sqlite_writer_lock(engine: AsyncEngine) -> asyncio.Lock | None:
    """One writer at a time per SQLite engine and event loop.

    SQLite lets one connection write; the others wait in its busy handler, which
    sleeps in growing steps (up to 100 ms) between tries. Writers of one process queue
    on this lock instead and start the moment the previous one commits.
    """
    if engine.dialect.name != "sqlite":
        return None
    per_loop = _WRITER_LOCKS.setdefault(engine.sync_engine, {})
    loop = asyncio.get_running_loop()
    lock = per_loop.get(loop)
    if lock is None:
        for gone in [other for other in per_loop if other.is_closed()]:
            del per_loop[gone]
        lock = per_loop[loop] = asyncio.Lock()
    return lock


async def claimed(conn: AsyncConnection, table: Any, **values: Any) -> bool:
    """Whether this transaction is the first to insert `values` into `table` (its unique
    key): INSERT … ON CONFLICT DO NOTHING, so concurrent control planes, or a restarted
    one, claim a notice exactly once."""
    insert = dialect_insert(conn)(table).values(**values)
    result = await conn.execute(insert.on_conflict_do_nothing())
    return bool(result.rowcount == 1)


def dialect_insert(bind: AsyncConnection | AsyncEngine | Connection | Engine) -> Any:
    """The `insert` construct of `bind`'s dialect (PostgreSQL's or SQLite's), whose
    `on_conflict_do_nothing/_update` both dialects spell the same way."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert

"""The request log, written off the hot path: a bounded queue and a batched writer per worker.

`RequestLogQueue.observe` is the proxy's only contact with the request log: it
appends the finished request's record to an in-memory deque, O(1), and never
waits. When the deque holds `capacity` records the new one is dropped and
counted (`dropped`, with at most one warning line every `warn_interval` seconds):
a slow or unavailable store costs log rows, never request latency.

A writer task drains the deque in batches — as soon as `batch_size` records are
waiting, else every `flush_interval` seconds — and hands each batch to a write
function. `RequestLogWriter.write` inserts a batch with one executemany INSERT in
one short transaction, so SQLite's single write lock (shared with the config,
identity and heartbeat writers) is held for milliseconds at a time. A failed
write is retried with exponential backoff; the batch is kept while the queue has
room, and given up (its rows counted in `lost`) only when the queue is full at
the same time, or at once when the store rejects the rows themselves (not a
connection or lock problem, so retrying cannot help). The writer logs and carries
on after any error: the request log never takes a worker down. `aclose` writes
everything still queued before the store goes away (graceful shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.record import RequestRecord
from portcullis.runtime.heartbeat import node_id
from portcullis.settings import Settings
from portcullis.store.analytics_tables import RequestLogRow
from portcullis.store.engine import write_transaction

log = structlog.get_logger(__name__)

T = TypeVar("T")
WriteBatch = Callable[[Sequence[T]], Awaitable[None]]

# Columns of `request_log` in the order `record_row` produces them.
COLUMNS = (
    "ts_ms",
    "request_id",
    "node",
    "method",
    "path",
    "path_template",
    "route",
    "service",
    "upstream_target",
    "consumer",
    "credential_id",
    "status",
    "bytes_in",
    "bytes_out",
    "client_ip",
    "user_agent",
    "latency_ms",
    "upstream_ms",
    "gateway_ms",
    "flags",
    "error_kind",
    "trace_id",
    "priority",
    "api",
    "api_version",
    "sandbox",
)


def _max_length(column: str) -> int:
    length = getattr(RequestLogRow.__table__.c[column].type, "length", None)
    if not isinstance(length, int):
        raise TypeError(f"request_log.{column} is not a bounded string column")
    return length


# Text the client controls (or that config may make long) is cut to the column's size:
# PostgreSQL would reject the whole batch for one overlong value.
_REQUEST_ID = _max_length("request_id")
_METHOD = _max_length("method")
_PATH = _max_length("path")
_TEMPLATE = _max_length("path_template")
_TARGET = _max_length("upstream_target")
_CLIENT_IP = _max_length("client_ip")
_AGENT = _max_length("user_agent")
_ERROR_KIND = _max_length("error_kind")
_TRACE_ID = _max_length("trace_id")
_PRIORITY = _max_length("priority")
_API = _max_length("api")
_API_VERSION = _max_length("api_version")


def _cut(value: str | None, length: int) -> str | None:
    return value if value is None or len(value) <= length else value[:length]


def record_row(record: RequestRecord, node: str) -> tuple[Any, ...]:
    """The `request_log` row of `record`, as a tuple in `COLUMNS` order."""
    return (
        int(record.started_at * 1000),
        record.request_id[:_REQUEST_ID],
        node,
        record.method[:_METHOD],
        record.path[:_PATH],
        _cut(record.path_template, _TEMPLATE),
        record.route,
        record.service,
        _cut(record.upstream_target, _TARGET),
        record.consumer,
        record.credential_id,
        record.status,
        record.bytes_in,
        record.bytes_out,
        record.client_ip[:_CLIENT_IP],
        _cut(record.user_agent, _AGENT),
        record.latency_ms,
        record.upstream_ms,
        record.gateway_ms,
        record.flags,
        _cut(record.error_kind, _ERROR_KIND),
        _cut(record.trace_id, _TRACE_ID),
        _cut(record.priority, _PRIORITY),
        _cut(record.api, _API),
        _cut(record.api_version, _API_VERSION),
        record.sandbox,
    )


def worker_node(node_name: str) -> str:
    """The `node` column of this worker's rows: node name, host and pid (as heartbeats use)."""
    return node_id(node_name, socket.gethostname(), os.getpid())


class RequestLogWriter:
    """Inserts batches of records into `request_log`: one executemany, one short transaction.

    The INSERT is compiled once for the engine's dialect and executed with
    positional tuples, which skips SQLAlchemy's per-row parameter processing (the
    values are already plain ints, floats, strings and None). Measured with
    `benchmarks/request_log_bench.py micro` (batches of 1000): ~1.8x the rows/s of
    `execute(insert(table), [dict, ...])` on SQLite and ~1.5x on PostgreSQL.
    """

    def __init__(self, engine: AsyncEngine, node: str) -> None:
        self._engine = engine
        self.node = node[:160]
        compiled = (
            insert(RequestLogRow)
            .inline()
            .compile(dialect=engine.dialect, column_keys=list(COLUMNS))
        )
        order = compiled.positiontup
        if order is None or tuple(order) != COLUMNS:
            # Only positional paramstyles (aiosqlite, asyncpg) are supported.
            raise ValueError(f"cannot insert positionally with dialect {engine.dialect.name}")
        self._sql = str(compiled)

    async def write(self, records: Sequence[RequestRecord]) -> None:
        """Insert `records` in one transaction (all or nothing); raises on store errors."""
        node = self.node
        rows = [record_row(r, node) for r in records]
        async with write_transaction(self._engine) as conn:
            await conn.exec_driver_sql(self._sql, rows)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same write may succeed (connection, lock, timeout problems).

    Anything else from the store (constraint, data or SQL errors) rejects the rows
    themselves; a batch failing that way is given up at once instead of blocking the
    queue forever.
    """
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, OSError | TimeoutError | ConnectionError)


class BatchQueue(Generic[T]):
    """Queues items and writes them in batches (see the module doc); the request log's,
    and any other writer that must stay off the request path (the request inspector's).

    Counters for metrics: `queue_depth` (records waiting), `dropped` (refused because
    the queue was full or closed), `lost` (taken for writing but given up after
    failures), `written` (rows inserted), `write_failures` (failed write attempts).
    `name` prefixes its log events (`request_log.dropped`...).
    """

    def __init__(
        self,
        write: WriteBatch[T],
        *,
        name: str = "request_log",
        capacity: int,
        batch_size: int,
        flush_interval: float,
        retry_initial: float = 0.05,
        retry_max: float = 5.0,
        warn_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or batch_size < 1 or flush_interval <= 0:
            raise ValueError("capacity and batch_size must be >= 1, flush_interval > 0")
        self._write = write
        self.name = name
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.warn_interval = warn_interval
        self._clock = clock
        self._pending: deque[T] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self.dropped = 0
        self.lost = 0
        self.written = 0
        self.write_failures = 0
        self._warned_at = -warn_interval
        self._dropped_at_warning = 0

    @property
    def queue_depth(self) -> int:
        """Records waiting to be written (not counting a batch being written or retried)."""
        return len(self._pending)

    def observe(self, record: T) -> None:
        """Queue `record` for writing, or drop and count it when the queue is full. O(1)."""
        pending = self._pending
        if len(pending) >= self.capacity or self._closed:
            self._drop()
            return
        pending.append(record)
        if len(pending) == self.batch_size:
            self._wake.set()

    def _drop(self) -> None:
        self.dropped += 1
        now = self._clock()
        if now - self._warned_at >= self.warn_interval:
            log.warning(
                f"{self.name}.dropped",
                dropped=self.dropped - self._dropped_at_warning,
                dropped_total=self.dropped,
                capacity=self.capacity,
                closed=self._closed,
            )
            self._warned_at = now
            self._dropped_at_warning = self.dropped

    def start(self) -> None:
        """Start the writer task (on the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"portcullis-{self.name}-writer")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        pending = self._pending
        while True:
            if len(pending) < self.batch_size and not self._closing:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            if pending:
                await self._write_batch()
            elif self._closing:
                return

    def _take(self) -> list[T]:
        pending = self._pending
        popleft = pending.popleft
        return [popleft() for _ in range(min(self.batch_size, len(pending)))]

    async def _write_batch(self) -> None:
        """Write one batch, retrying transient failures; never raises (except cancellation)."""
        batch = self._take()
        delay = self.retry_initial
        while True:
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                self._give_up(batch, "cancelled", None)
                raise
            except Exception as exc:
                self.write_failures += 1
                if not is_transient(exc):
                    self._give_up(batch, "rejected", exc)
                    return
                if len(self._pending) >= self.capacity:
                    self._give_up(batch, "queue_full", exc)
                    return
                log.warning(
                    f"{self.name}.write_failed",
                    rows=len(batch),
                    retry_in=round(delay, 3),
                    error=str(exc),
                    kind=type(exc).__name__,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            else:
                self.written += len(batch)
                return

    def _give_up(self, batch: list[T], reason: str, exc: Exception | None) -> None:
        self.lost += len(batch)
        log.error(
            f"{self.name}.batch_lost",
            rows=len(batch),
            lost_total=self.lost,
            reason=reason,
            error=str(exc) if exc is not None else None,
            kind=type(exc).__name__ if exc is not None else None,
        )

    async def flush(self) -> None:
        """Write everything queued now (tests, and the writer's own shutdown path)."""
        while self._pending:
            await self._write_batch()

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop accepting records and write everything queued, for at most `timeout` seconds.

        Whatever is still queued when the time is up is counted in `lost`.
        Safe to call more than once, and without `start`.
        """
        self._closed = True
        self._closing = True
        task = self._task
        if task is None:
            task = self._task = asyncio.create_task(
                self._run(), name=f"portcullis-{self.name}-writer"
            )
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pending:
            left = len(self._pending)
            self._pending.clear()
            self.lost += left
            log.error(f"{self.name}.unflushed_at_shutdown", rows=left, lost_total=self.lost)
        # The worker's totals, as a warning when rows went missing.
        (log.warning if self.dropped or self.lost else log.info)(
            f"{self.name}.closed", written=self.written, dropped=self.dropped, lost=self.lost
        )


class RequestLogQueue(BatchQueue[RequestRecord]):
    """A `RequestObserver` that queues records and writes them in batches to `request_log`."""

    @classmethod
    def from_settings(cls, engine: AsyncEngine, settings: Settings) -> RequestLogQueue:
        """A queue writing to `engine`'s `request_log`, sized by the request_log_* settings."""
        writer = RequestLogWriter(engine, worker_node(settings.node_name))
        return cls(
            writer.write,
            capacity=settings.request_log_queue_size,
            batch_size=settings.request_log_batch_size,
            flush_interval=settings.request_log_flush_interval,
        )

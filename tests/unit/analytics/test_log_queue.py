"""RequestLogQueue: bounded, never blocking, batched by size or time, retrying, flushed on close.

The write function is a stand-in here (the SQL writer has its own tests against
SQLite and PostgreSQL in tests/integration/analytics), so each behaviour is
driven exactly: a writer that blocks, fails a set number of times, or rejects rows.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError
from structlog.testing import capture_logs

from portcullis.analytics.log_queue import (
    COLUMNS,
    RequestLogQueue,
    is_transient,
    record_row,
)
from portcullis.analytics.record import Flag, RequestRecord
from support.records import make_record
from support.threaded_upstream import eventually


class Recorder:
    """A write function that records batches; can be held (blocked) or made to fail."""

    def __init__(self, failures: Sequence[Exception] = ()) -> None:
        self.batches: list[list[RequestRecord]] = []
        self.failures = list(failures)
        self.attempts = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, records: Sequence[RequestRecord]) -> None:
        self.attempts += 1
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(list(records))

    @property
    def rows(self) -> list[str]:
        return [r.request_id for batch in self.batches for r in batch]


def locked() -> OperationalError:
    return OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))


def rejected() -> IntegrityError:
    return IntegrityError("INSERT", {}, sqlite3.IntegrityError("NOT NULL constraint failed"))


async def test_full_queue_drops_and_counts_without_blocking() -> None:
    writer = Recorder()
    writer.gate.clear()  # the store hangs: nothing is ever written
    queue = RequestLogQueue(writer, capacity=100, batch_size=10, flush_interval=0.01)
    queue.start()
    await asyncio.sleep(0.05)  # the writer is waiting for records
    started = time.perf_counter()
    for n in range(1000):
        queue.observe(make_record(n))
    elapsed = time.perf_counter() - started
    assert queue.queue_depth == 100
    assert queue.dropped == 900
    assert elapsed < 0.5  # 1000 observe() calls, a hanging store: no waiting anywhere
    writer.gate.set()
    await queue.aclose(timeout=2)
    assert writer.rows == [f"req-{n}" for n in range(100)]
    assert queue.written == 100
    assert queue.lost == 0


async def test_drop_warning_is_rate_limited() -> None:
    now = [100.0]
    queue = RequestLogQueue(
        Recorder(), capacity=1, batch_size=10, flush_interval=60, clock=lambda: now[0]
    )
    with capture_logs() as logs:
        queue.observe(make_record(0))  # queued
        for _ in range(5):
            queue.observe(make_record())  # dropped: first warns, the rest are quiet
        now[0] += 9.9
        queue.observe(make_record())
        now[0] += 0.2
        for _ in range(3):
            queue.observe(make_record())  # 10 s after the first warning: warns again
    warnings = [e for e in logs if e["event"] == "request_log.dropped"]
    assert [(w["dropped"], w["dropped_total"]) for w in warnings] == [(1, 1), (6, 7)]
    assert all(w["log_level"] == "warning" for w in warnings)
    assert queue.dropped == 9


async def test_a_full_batch_is_written_at_once_the_rest_on_close() -> None:
    writer = Recorder()
    queue = RequestLogQueue(writer, capacity=100, batch_size=3, flush_interval=3600)
    queue.start()
    for n in range(7):
        queue.observe(make_record(n))
    await eventually(lambda: len(writer.batches) == 2)
    assert [len(b) for b in writer.batches] == [3, 3]
    await asyncio.sleep(0.05)
    assert queue.queue_depth == 1  # below a batch: waits for the interval (an hour)
    await queue.aclose(timeout=2)
    assert [len(b) for b in writer.batches] == [3, 3, 1]
    assert writer.rows == [f"req-{n}" for n in range(7)]
    assert not queue.running


async def test_a_partial_batch_is_written_after_the_flush_interval() -> None:
    writer = Recorder()
    queue = RequestLogQueue(writer, capacity=100, batch_size=1000, flush_interval=0.1)
    queue.start()
    await asyncio.sleep(0.01)
    started = time.monotonic()
    queue.observe(make_record(1))
    queue.observe(make_record(2))
    await eventually(lambda: writer.batches)
    waited = time.monotonic() - started
    assert writer.rows == ["req-1", "req-2"]
    assert 0.05 <= waited < 1.0
    await queue.aclose()


async def test_transient_failures_are_retried_with_backoff_until_written() -> None:
    writer = Recorder(failures=[locked(), locked(), locked()])
    queue = RequestLogQueue(
        writer, capacity=100, batch_size=5, flush_interval=0.01, retry_initial=0.02
    )
    queue.start()
    started = time.monotonic()
    for n in range(5):
        queue.observe(make_record(n))
    with capture_logs() as logs:
        await eventually(lambda: queue.written == 5)
    # Backoff 0.02 + 0.04 + 0.08 between the four attempts.
    assert time.monotonic() - started >= 0.14
    assert writer.attempts == 4
    assert queue.write_failures == 3
    assert queue.lost == 0
    retries = [e["retry_in"] for e in logs if e["event"] == "request_log.write_failed"]
    assert retries == [0.02, 0.04, 0.08]
    await queue.aclose()


async def test_rows_the_store_rejects_are_counted_lost_and_the_writer_goes_on() -> None:
    writer = Recorder(failures=[rejected()])
    queue = RequestLogQueue(writer, capacity=100, batch_size=2, flush_interval=0.01)
    queue.start()
    with capture_logs() as logs:
        for n in range(4):
            queue.observe(make_record(n))
        await eventually(lambda: queue.written == 2)
    assert queue.lost == 2
    assert writer.rows == ["req-2", "req-3"]
    lost = [e for e in logs if e["event"] == "request_log.batch_lost"]
    assert lost[0]["reason"] == "rejected"
    assert lost[0]["rows"] == 2
    await queue.aclose()


async def test_a_failing_batch_is_given_up_once_the_queue_is_full() -> None:
    writer = Recorder(failures=[locked()] * 3)
    queue = RequestLogQueue(
        writer, capacity=4, batch_size=2, flush_interval=0.01, retry_initial=0.05
    )
    queue.start()
    queue.observe(make_record(0))
    queue.observe(make_record(1))
    await eventually(lambda: writer.attempts == 1)  # batch [0, 1] failed once, kept for a retry
    for n in range(2, 6):
        queue.observe(make_record(n))  # the queue is now full (4)
    await eventually(lambda: queue.lost == 2)  # the next failure gives the old batch up
    await eventually(lambda: queue.written == 4)
    assert writer.rows == ["req-2", "req-3", "req-4", "req-5"]
    assert queue.dropped == 0
    await queue.aclose()


async def test_close_flushes_everything_then_refuses_new_records() -> None:
    writer = Recorder()
    queue = RequestLogQueue(writer, capacity=10_000, batch_size=100, flush_interval=3600)
    queue.start()
    for n in range(1050):
        queue.observe(make_record(n))
    await queue.aclose(timeout=5)
    assert len(writer.rows) == 1050
    assert queue.written == 1050
    assert max(len(b) for b in writer.batches) == 100
    queue.observe(make_record(9999))
    assert queue.dropped == 1
    assert queue.queue_depth == 0
    await queue.aclose()  # idempotent


async def test_close_without_start_still_writes() -> None:
    writer = Recorder()
    queue = RequestLogQueue(writer, capacity=10, batch_size=4, flush_interval=3600)
    queue.observe(make_record(1))
    await queue.aclose()
    assert writer.rows == ["req-1"]


async def test_close_gives_up_after_its_timeout_and_counts_what_is_left() -> None:
    writer = Recorder()
    writer.gate.clear()
    queue = RequestLogQueue(writer, capacity=100, batch_size=5, flush_interval=0.01)
    queue.start()
    for n in range(12):
        queue.observe(make_record(n))
    with capture_logs() as logs:
        await queue.aclose(timeout=0.1)
    assert queue.lost == 12
    assert queue.written == 0
    assert queue.queue_depth == 0
    events = {e["event"] for e in logs}
    assert {"request_log.batch_lost", "request_log.unflushed_at_shutdown"} <= events


def test_invalid_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        RequestLogQueue(Recorder(), capacity=0, batch_size=1, flush_interval=1)
    with pytest.raises(ValueError):
        RequestLogQueue(Recorder(), capacity=1, batch_size=1, flush_interval=0)


def test_record_row_matches_columns_and_cuts_overlong_text() -> None:
    record = make_record(3, path="/x" * 5000, user_agent="u" * 1000, method="M" * 40)
    row = dict(zip(COLUMNS, record_row(record, "node-1:host:42"), strict=True))
    assert row["ts_ms"] == 1_700_000_003_250
    assert row["node"] == "node-1:host:42"
    assert len(row["path"]) == 2048
    assert len(row["user_agent"]) == 512
    assert len(row["method"]) == 16
    assert row["flags"] == Flag.RETRIED
    assert row["upstream_ms"] == 2.0
    assert row["error_kind"] is None
    assert row["credential_id"] == "key-1"


def test_transient_errors_are_told_apart_from_rejected_rows() -> None:
    assert is_transient(locked())
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(rejected())
    assert not is_transient(ValueError("bug"))


def test_observe_costs_microseconds() -> None:
    queue = RequestLogQueue(Recorder(), capacity=200_000, batch_size=10**6, flush_interval=60)
    record = make_record()
    n = 100_000
    started = time.perf_counter()
    for _ in range(n):
        queue.observe(record)
    per_call_us = (time.perf_counter() - started) / n * 1e6
    assert queue.queue_depth == n
    # Typically ~0.15 µs here; the bound leaves room for a loaded, shared machine.
    assert per_call_us < 5.0

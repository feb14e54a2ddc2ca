"""The request-log writer and the retention job against real stores (SQLite and PostgreSQL).

Proves: a batch lands as rows with every field intact; a batch waits for SQLite's
write lock held by another writer instead of failing; retention deletes only rows
past the cutoff, in chunks, and two purges running at once neither fail nor
delete anything young.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.log_queue import RequestLogQueue, RequestLogWriter
from portcullis.analytics.record import Flag, RequestRecord
from portcullis.analytics.retention import purge_request_log, retention_cutoff_ms
from portcullis.store.analytics_tables import RequestLogRow
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    eng = create_engine(database_url)
    try:
        yield eng
    finally:
        await eng.dispose()


def record(n: int, started_at: float, **overrides: object) -> RequestRecord:
    fields: dict[str, object] = {
        "request_id": f"rid-{n}",
        "started_at": started_at,
        "method": "POST",
        "path": "/orders/7",
        "path_template": "/orders",
        "route": "orders",
        "service": "shop",
        "upstream_target": "10.0.0.7:8080",
        "consumer": "alice",
        "credential_id": "k-1",
        "status": 201,
        "bytes_in": 123,
        "bytes_out": 4567,
        "client_ip": "2001:db8::1",
        "user_agent": "curl/8",
        "latency_ms": 12.5,
        "upstream_ms": 10.25,
        "gateway_ms": 2.25,
        "upstream_offset_ms": 1.0,
        "flags": int(Flag.RETRIED | Flag.CACHE_MISS),
        "error_kind": None,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "priority": "critical",
    }
    fields.update(overrides)
    return RequestRecord(**fields)  # type: ignore[arg-type]


async def count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(RequestLogRow))).scalar_one()


async def test_a_batch_is_one_insert_with_every_field(engine: AsyncEngine) -> None:
    writer = RequestLogWriter(engine, "edge-1:host:42")
    await writer.write(
        [
            record(1, 1_700_000_000.5),
            record(
                2,
                1_700_000_001.0,
                status=404,
                route=None,
                service=None,
                upstream_target=None,
                consumer=None,
                credential_id=None,
                upstream_ms=None,
                upstream_offset_ms=None,
                path="/é" * 2000,
                error_kind="route-not-found",
                priority=None,
            ),
        ]
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(select(RequestLogRow).order_by(RequestLogRow.id))).all()
    first, second = rows
    assert first.ts_ms == 1_700_000_000_500
    assert (first.request_id, first.node, first.method) == ("rid-1", "edge-1:host:42", "POST")
    assert (first.path, first.path_template, first.route, first.service) == (
        "/orders/7",
        "/orders",
        "orders",
        "shop",
    )
    assert (first.upstream_target, first.consumer, first.credential_id) == (
        "10.0.0.7:8080",
        "alice",
        "k-1",
    )
    assert (first.status, first.bytes_in, first.bytes_out) == (201, 123, 4567)
    assert (first.client_ip, first.user_agent) == ("2001:db8::1", "curl/8")
    assert (first.latency_ms, first.upstream_ms, first.gateway_ms) == (12.5, 10.25, 2.25)
    assert first.flags == Flag.RETRIED | Flag.CACHE_MISS
    assert (first.error_kind, first.trace_id, first.priority) == (
        None,
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "critical",
    )
    assert second.status == 404
    assert second.route is None
    assert second.upstream_ms is None
    assert second.error_kind == "route-not-found"
    assert second.path == ("/é" * 2000)[:2048]  # cut to the column, not refused


async def test_the_queue_waits_for_a_busy_sqlite_writer(tmp_path: object) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/busy.db"
    await upgrade_to_head(url)
    engine = create_engine(url)
    try:
        queue = RequestLogQueue(
            RequestLogWriter(engine, "n").write, capacity=100, batch_size=10, flush_interval=0.01
        )
        queue.start()
        async with write_transaction(engine) as conn:
            # Another writer (config apply, heartbeat...) holds the write lock for a while.
            await conn.execute(
                insert(RequestLogRow).values(
                    ts_ms=1, request_id="other", node="x", method="GET", path="/",
                    status=200, bytes_in=0, bytes_out=0, client_ip="::1", latency_ms=1.0,
                    gateway_ms=1.0, flags=0,
                )
            )  # fmt: skip
            for n in range(10):
                queue.observe(record(n, time.time()))
            await asyncio.sleep(0.3)
            assert queue.written == 0
        await queue.aclose(timeout=5)
        assert (queue.written, queue.lost, queue.write_failures) == (10, 0, 0)
        assert await count(engine) == 11
    finally:
        await engine.dispose()


async def test_retention_deletes_only_expired_rows_in_chunks(engine: AsyncEngine) -> None:
    now = time.time()
    cutoff = retention_cutoff_ms(7, now=now)
    old = [record(n, now - 8 * 86_400 - n) for n in range(25)]
    young = [record(100 + n, now - 6 * 86_400 + n) for n in range(5)]
    await RequestLogWriter(engine, "n").write([*young, *old])
    deleted = await purge_request_log(engine, older_than_ms=cutoff, chunk=7, pause=0)
    assert deleted == 25
    async with engine.connect() as conn:
        left = (await conn.execute(select(RequestLogRow.request_id))).scalars().all()
    assert sorted(left) == sorted(r.request_id for r in young)
    assert await purge_request_log(engine, older_than_ms=cutoff, chunk=7) == 0


async def test_two_purges_at_once_share_the_work(engine: AsyncEngine) -> None:
    now = time.time()
    writer = RequestLogWriter(engine, "n")
    await writer.write([record(n, now - 30 * 86_400) for n in range(400)])
    await writer.write([record(1000 + n, now) for n in range(10)])
    cutoff = retention_cutoff_ms(1, now=now)
    results = await asyncio.gather(
        purge_request_log(engine, older_than_ms=cutoff, chunk=50, pause=0),
        purge_request_log(engine, older_than_ms=cutoff, chunk=50, pause=0),
    )
    assert sum(results) == 400
    assert await count(engine) == 10


def test_cutoff_is_days_before_now() -> None:
    assert retention_cutoff_ms(7, now=1_000_000.0) == (1_000_000 - 7 * 86_400) * 1000
    assert retention_cutoff_ms(0.5, now=100_000.0) == (100_000 - 43_200) * 1000

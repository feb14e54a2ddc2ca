"""Quota usage published by data-plane workers (memory backend) and summed for the usage API,
against a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.limits.backend import LimitRequest
from portcullis.limits.memory import MemoryBackend
from portcullis.limits.quota_usage import (
    DEAD_AFTER,
    RETIRED,
    CounterUsage,
    QuotaUsagePublisher,
    read_quota_usage,
)
from portcullis.limits.spec import CALENDAR_GRACE_US, MICROS, LimitSpec
from portcullis.store.analytics_tables import QuotaUsageRow
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.identity_tables import DataPlaneNodeRow
from portcullis.store.migrations import upgrade_to_head

NOW_US = time.time_ns() // 1000
START, END = NOW_US - 3600 * MICROS, NOW_US + 3600 * MICROS
ALICE = "pq:daily:d:c=alice"
BOB = "pq:daily:d:c=bob"
FRESH = timedelta(seconds=6)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


async def beat(engine: AsyncEngine, worker: str, age: timedelta = timedelta(0)) -> None:
    at = datetime.now(UTC) - age
    async with write_transaction(engine) as conn:
        await conn.execute(
            insert(DataPlaneNodeRow).values(
                id=worker,
                node_name="n",
                pid=1,
                config_version=1,
                started_at=at,
                heartbeat_at=at,
            )
        )


def spend(backend: MemoryBackend, key: str, n: int) -> None:
    for _ in range(n):
        spec = LimitSpec.calendar(1000, START, END)
        assert backend.decide_now([LimitRequest(key, spec)])[0].allowed


async def rows(engine: AsyncEngine) -> set[tuple[str, str, int]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(QuotaUsageRow.worker_id, QuotaUsageRow.counter_key, QuotaUsageRow.used)
        )
        return {(w, k, u) for w, k, u in result}


async def test_workers_publish_changes_and_the_reader_sums_them(engine: AsyncEngine) -> None:
    one, two = MemoryBackend(), MemoryBackend()
    p1, p2 = QuotaUsagePublisher(engine, one, "w1"), QuotaUsagePublisher(engine, two, "w2")
    await beat(engine, "w1")
    await beat(engine, "w2")
    spend(one, ALICE, 3)
    spend(two, ALICE, 4)
    spend(two, BOB, 1)
    # Not a plan quota: a rate limit, and a calendar counter of another prefix.
    one.decide_now([LimitRequest("pl:x:c=alice", LimitSpec.of("fixed_window", 9, 1))])
    spend(one, "other:c=alice", 2)
    assert await p1.publish() == 1
    assert await p2.publish() == 2
    assert await rows(engine) == {("w1", ALICE, 3), ("w2", ALICE, 4), ("w2", BOB, 1)}
    usage = await read_quota_usage(engine, [ALICE, BOB, "pq:none"], fresh_for=FRESH)
    assert usage == {ALICE: CounterUsage(7, 4, 2), BOB: CounterUsage(1, 1, 1)}
    # Only what changed is written again.
    assert await p1.publish() == 0
    spend(one, ALICE, 2)
    assert await p1.publish() == 1
    assert (await read_quota_usage(engine, [ALICE], fresh_for=FRESH))[ALICE] == CounterUsage(
        9, 5, 2
    )
    # A counter the backend forgot (its window ended, or an admin reset) is deleted.
    one.clear()
    assert await p1.publish() == 0
    assert await rows(engine) == {("w2", ALICE, 4), ("w2", BOB, 1)}


async def test_a_stopping_worker_folds_its_final_counts_into_retired(engine: AsyncEngine) -> None:
    one, two = MemoryBackend(), MemoryBackend()
    p1, p2 = QuotaUsagePublisher(engine, one, "w1"), QuotaUsagePublisher(engine, two, "w2")
    await beat(engine, "w2")
    spend(one, ALICE, 2)
    await p1.publish()
    spend(one, ALICE, 3)  # not published yet: stop() publishes it
    spend(two, ALICE, 1)
    await p2.publish()
    await p1.stop()
    # A successor of the same process name starting at zero, then stopping too.
    p1b = QuotaUsagePublisher(engine, MemoryBackend(), "w1")
    spend(p1b._backend, ALICE, 4)
    await p1b.stop()
    assert await rows(engine) == {(RETIRED, ALICE, 9), ("w2", ALICE, 1)}
    # Retired counts are in `used`, never in the live workers' figures.
    usage = await read_quota_usage(engine, [ALICE], fresh_for=FRESH)
    assert usage[ALICE] == CounterUsage(10, 1, 1)


async def test_cleanup_folds_silent_workers_and_deletes_ended_periods(engine: AsyncEngine) -> None:
    live, silent, gone = MemoryBackend(), MemoryBackend(), MemoryBackend()
    await beat(engine, "live")
    await beat(engine, "silent", age=DEAD_AFTER + timedelta(seconds=5))
    spend(live, ALICE, 1)
    spend(silent, ALICE, 2)
    spend(gone, ALICE, 4)
    publisher = QuotaUsagePublisher(engine, live, "live")
    # Rows of a period that ended more than the grace ago (say, yesterday's).
    async with write_transaction(engine) as conn:
        await conn.execute(
            insert(QuotaUsageRow),
            [
                {
                    "worker_id": worker,
                    "counter_key": "pq:daily:old:c=alice",
                    "period_end_us": NOW_US - CALENDAR_GRACE_US - MICROS,
                    "used": 5,
                    "updated_at": datetime.now(UTC),
                }
                for worker in ("live", RETIRED)
            ],
        )
    await publisher.publish()
    await QuotaUsagePublisher(engine, silent, "silent").publish()
    await QuotaUsagePublisher(engine, gone, "gone").publish()
    # Recently stale workers are not live for the reader but not folded yet either.
    assert (await read_quota_usage(engine, [ALICE], fresh_for=FRESH))[ALICE] == CounterUsage(
        7, 1, 1
    )
    await publisher.cleanup()
    assert await rows(engine) == {("live", ALICE, 1), (RETIRED, ALICE, 6)}
    assert (await read_quota_usage(engine, [ALICE], fresh_for=FRESH))[ALICE] == CounterUsage(
        7, 1, 1
    )


async def test_start_publishes_periodically_and_stop_folds(
    engine: AsyncEngine,
) -> None:
    backend = MemoryBackend()
    publisher = QuotaUsagePublisher(engine, backend, "w1", interval=0.05)
    publisher.start()
    try:
        spend(backend, ALICE, 2)
        deadline = time.monotonic() + 3
        while await rows(engine) != {("w1", ALICE, 2)}:
            assert time.monotonic() < deadline, "never published"
            await asyncio.sleep(0.02)
    finally:
        await publisher.stop()
    assert await rows(engine) == {(RETIRED, ALICE, 2)}

"""Live traffic's two transports with real servers, in process: the store table (SQLite and
PostgreSQL) and Redis pub/sub with two control-plane nodes.

Workers (`WorkerTraffic`) and control planes (`LiveTraffic`) share one clock the test
moves, so each second ends when the test says; everything between them is real: rows
inserted and polled, messages published and received.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.live import (
    STORE_KEEP_SECONDS,
    Organizations,
    RedisReportSink,
    ReportSink,
    SecondAggregator,
    StoreReportSink,
    WorkerTraffic,
)
from portcullis.analytics.record import RequestRecord
from portcullis.model.config import GatewayConfig
from portcullis.redis_client import SharedRedis
from portcullis.services.streams.traffic import LiveTraffic, TrafficFrame
from portcullis.settings import Settings
from portcullis.store.analytics_tables import LiveTrafficReportRow
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from support.clock import ManualClock
from support.redis import RedisServer
from support.threaded_upstream import eventually

T0 = 1_700_000_000
CONFIG = GatewayConfig.model_validate(
    {
        "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
        "routes": [{"name": "orders", "service": "svc", "paths": ["/orders"]}],
        "consumers": [{"username": "alice"}],
    }
)


def record(at: float, status: int = 200, latency_ms: float = 5.0) -> RequestRecord:
    return RequestRecord(
        request_id="r", started_at=at - latency_ms / 1000, method="GET", path="/orders",
        path_template=None, route="orders", service="svc", upstream_target=None,
        consumer="alice", credential_id=None, status=status, bytes_in=0, bytes_out=0,
        client_ip="127.0.0.1", user_agent=None, latency_ms=latency_ms, upstream_ms=None,
        gateway_ms=latency_ms, upstream_offset_ms=None, flags=0, error_kind=None,
        trace_id=None, priority=None,
    )  # fmt: skip


def worker(name: str, sink: ReportSink, clock: ManualClock) -> WorkerTraffic:
    aggregator = SecondAggregator(
        name, Organizations(lambda: CONFIG), max_routes=10, max_consumers=10
    )
    return WorkerTraffic(sink, aggregator, capacity=1000, clock=clock)


def busy_second(workers: Sequence[WorkerTraffic], second: int) -> None:
    """Worker n serves n+1 requests in `second`, the last one a 5xx, one 4xx each."""
    for n, w in enumerate(workers):
        for i in range(n + 1):
            w.observe(record(second + 0.5, status=500 if i == n else 200))
        w.observe(record(second + 0.6, status=404))


def check_merged(frame: TrafficFrame, second: int) -> None:
    assert frame.second == second
    assert frame.workers == 2
    orders = frame.routes["orders"]
    assert (orders.requests, orders.errors_4xx, orders.errors_5xx) == (5, 2, 2)
    assert frame.consumers["alice"].requests == 5
    assert frame.totals.requests == 5
    assert frame.totals.p95_ms == pytest.approx(5.0, rel=0.01)


async def test_reports_through_the_store_merge_into_one_frame_and_old_rows_go(
    engine: AsyncEngine,
) -> None:
    clock = ManualClock(T0 + 0.5)
    settings = Settings(live_traffic_grace=1.0)
    workers = [
        worker(f"node-{n}:host:{n}", StoreReportSink(engine, clock=clock), clock) for n in (1, 2)
    ]
    live = LiveTraffic(engine, settings, None, clock=clock)
    for second in (T0, T0 + 1):
        busy_second(workers, second)
        clock.now = second + 1.02  # the second ended
        for w in workers:
            await w.flush()
        assert await live.poll_store() == 2
        assert await live.poll_store() == 0  # each row is read once
        if second == T0:
            # The first second after starting waits for the grace: the control plane
            # does not know yet which workers there are.
            assert live.tick() == []
            clock.now = second + 1 + settings.live_traffic_grace
        # Then both workers known and reported: no waiting.
        (frame,) = live.tick()
        check_merged(frame, second)

    # Rows older than STORE_KEEP_SECONDS are deleted by the workers as they write.
    clock.advance(STORE_KEEP_SECONDS + 40)
    await workers[0].flush()
    async with engine.connect() as conn:
        oldest = await conn.scalar(select(func.min(LiveTrafficReportRow.second)))
    assert oldest is not None
    assert oldest >= int(clock()) - STORE_KEEP_SECONDS


async def sqlite_store(tmp: Path) -> AsyncEngine:
    url = f"sqlite+aiosqlite:///{tmp / 'store.db'}"
    await upgrade_to_head(url)
    return create_engine(url)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[list[SharedRedis]]:
    """Four processes' Redis: two workers' and two control planes'."""
    clients = [SharedRedis.connect(redis_server.url, timeout=2.0) for _ in range(4)]
    yield clients
    for client in clients:
        await client.aclose()


async def test_reports_over_redis_reach_every_control_plane_node(
    redis: list[SharedRedis], tmp_path: Path
) -> None:
    store = await sqlite_store(tmp_path)
    clock = ManualClock(T0 + 0.5)
    settings = Settings(
        redis_url="redis://unused", live_traffic_channel=f"test:live:{uuid.uuid4().hex[:8]}"
    )
    nodes = [LiveTraffic(store, settings, r, clock=clock) for r in redis[2:]]
    for node in nodes:
        await node.start()
        assert node.subscribed.is_set()
    listeners = [node.listen() for node in nodes]
    workers = [
        worker(
            f"node-{n}:host:{n}", RedisReportSink(redis[n], settings.live_traffic_channel), clock
        )
        for n in (0, 1)
    ]
    try:
        for second in (T0, T0 + 1):
            busy_second(workers, second)
            clock.now = second + 1.02
            for w in workers:
                await w.flush()
            received = 2 * (second - T0 + 1)
            await eventually(lambda: all(n.reports == received for n in nodes))  # noqa: B023
            if second == T0:
                clock.now = second + 1 + settings.live_traffic_grace  # as above
            # The second's frame comes from the ticker, without moving the clock further.
            for listener in listeners:
                check_merged(await anext(listener), second)
        assert [n.reports for n in nodes] == [4, 4]
    finally:
        for node in nodes:
            await node.stop()
        await store.dispose()
    assert [n.listeners for n in nodes] == [0, 0]


async def test_a_worker_whose_redis_is_away_loses_its_reports_counted_never_raising() -> None:
    clock = ManualClock(T0 + 0.5)
    channel = f"test:live:{uuid.uuid4().hex[:8]}"
    dead = SharedRedis.connect("redis://127.0.0.1:9", timeout=0.5)
    w = worker("node-1:host:1", RedisReportSink(dead, channel), clock)
    try:
        w.observe(record(T0 + 0.5))
        clock.advance(1)
        await w.flush()  # never raises
        assert (w.sent, w.lost) == (0, 1)
    finally:
        await dead.aclose()

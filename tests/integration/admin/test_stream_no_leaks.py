"""No leaks: 10,000 SSE clients that vanish mid-stream (RST, no FIN, nothing read after
the opening frame) leave no open stream, live-feed entry, asyncio task or Redis
subscription behind in the control plane (granian, one process, Redis event bus),
counted by what its `/metrics` reports and by Redis itself."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from portcullis.events.bus import RedisBus, record_events
from portcullis.events.catalogue import EventType
from portcullis.store.engine import create_engine, write_transaction
from support.events import sample
from support.live_streams import (
    PLANE_ENV,
    abort,
    gauge_reaches,
    key_created,
    open_raw,
    request_bytes,
    signed_in,
    stream_gauges,
)
from support.redis import RedisServer
from support.servers import ControlPlane, control_plane

pytestmark = pytest.mark.slow

CLIENTS = int(os.environ.get("PORTCULLIS_TEST_STREAM_DISCONNECTS", "10000"))
CONCURRENCY = 200
# With CONCURRENCY clients in flight, each lives while several events reach its queue.
EVENT_EVERY = 10


@pytest.fixture(scope="module")
def plane(
    own_redis: RedisServer, migrated_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    path = tmp_path_factory.mktemp("leaks") / "admin.db"
    shutil.copyfile(migrated_template, path)
    env = {
        **PLANE_ENV,
        "PORTCULLIS_REDIS_URL": own_redis.url,
        "PORTCULLIS_STREAM_HEARTBEAT_SECONDS": "60",
        # One event queued per client: every burst makes clients lag and catch up, so
        # the storm below goes through that path too.
        "PORTCULLIS_STREAM_QUEUE_SIZE": "1",
    }
    with control_plane(f"sqlite+aiosqlite:///{path}", env=env) as cp:
        yield cp


async def pubsub_counts(redis: Redis) -> tuple[int, int]:
    """(pattern subscriptions, channels with subscribers) on the whole Redis server."""
    numpat = int(await redis.pubsub_numpat())
    channels = await redis.pubsub_channels()
    return numpat, len(channels)


async def test_the_gauges_count_open_live_and_lagged_streams(
    plane: ControlPlane, own_redis: RedisServer
) -> None:
    token = await signed_in(plane.url, plane.database_url, "gauges@example.com")
    request = request_bytes(plane.port, token, "?types=key.*")
    bus = RedisBus(create_engine(plane.database_url), own_redis.url)
    # The process's own streams (presence follows config changes on one) stay open.
    base = await stream_gauges(plane.url)
    own, own_live = base["portcullis_stream_open"], base["portcullis_stream_live"]
    opened = [await open_raw(plane.port, request) for _ in range(20)]
    try:
        before = await gauge_reaches(plane.url, "portcullis_stream_open", own + 20)
        assert before["portcullis_stream_live"] == own_live + 20
        # Five events in one transaction: one round hands them to every stream at once,
        # and a queue of one overflows (each stream lags once, then catches up).
        async with write_transaction(bus.engine) as conn:
            events = await record_events(conn, [key_created(i) for i in range(5)])
        await bus.deliver(events)
        reader, _, got = opened[0]
        while got.count(b"\nid: ") < 5:
            got += await asyncio.wait_for(reader.read(65536), 10)
        ids = [int(line[4:]) for line in got.decode().splitlines() if line.startswith("id: ")]
        assert ids == [e.id for e in events]
        lagged = "portcullis_stream_lagged_total"
        after = await gauge_reaches(plane.url, lagged, before[lagged] + 20)
        assert after["portcullis_stream_open"] == own + 20
    finally:
        for _, writer, _ in opened:
            abort(writer)
        await bus.close()
        await bus.engine.dispose()
    await gauge_reaches(plane.url, "portcullis_stream_open", own)
    await gauge_reaches(plane.url, "portcullis_stream_live", own_live)


async def test_ten_thousand_abrupt_disconnects_leave_nothing_behind(
    plane: ControlPlane, own_redis: RedisServer
) -> None:
    token = await signed_in(plane.url, plane.database_url, "leaks@example.com")
    request = request_bytes(plane.port, token, "?types=key.*")
    client = Redis.from_url(own_redis.url)
    # A producer keeps events flowing through the bus, so clients vanish with events
    # queued for them or on their way.
    bus = RedisBus(create_engine(plane.database_url), own_redis.url)
    try:
        # Warm up (first requests import and cache), then the baseline: the process's
        # own streams (presence follows config changes on one).
        own = (await stream_gauges(plane.url))["portcullis_stream_open"]
        _, writer, _ = await open_raw(plane.port, request)
        abort(writer)
        before = await gauge_reaches(plane.url, "portcullis_stream_open", own)
        subscriptions = await pubsub_counts(client)
        assert subscriptions[0] == 1  # the control plane's one pattern subscription

        stop = asyncio.Event()
        opened = 0

        async def produce() -> int:
            # One event per EVENT_EVERY clients opened, not per unit of time: a slow,
            # loaded machine would otherwise publish (and fan out) more the slower it is.
            n = 0
            while not stop.is_set():
                if n * EVENT_EVERY <= opened:
                    kind = EventType.KEY_CREATED
                    await bus.publish(kind, f"key:k{n}", sample(kind, key_id=f"k{n}"))
                    n += 1
                await asyncio.sleep(0.01)
            return n

        queue = iter(range(CLIENTS))

        async def vanish() -> None:
            nonlocal opened
            for _ in queue:
                _, writer, _ = await open_raw(plane.port, request)
                opened += 1
                abort(writer)

        started = time.monotonic()
        producer = asyncio.create_task(produce())
        await asyncio.gather(*(vanish() for _ in range(CONCURRENCY)))
        stop.set()
        published = await producer
        storm = time.monotonic() - started
        after = await gauge_reaches(plane.url, "portcullis_stream_open", own)
        settled = time.monotonic() - started - storm
        print(
            f"\n{opened} abrupt disconnects in {storm:.1f} s ({opened / storm:.0f}/s) with "
            f"{published} events published; streams gone {settled:.2f} s later; "
            f"tasks {before['portcullis_control_plane_asyncio_tasks']:.0f} -> "
            f"{after['portcullis_control_plane_asyncio_tasks']:.0f}"
        )
        assert opened == CLIENTS
        assert after["portcullis_stream_open"] == before["portcullis_stream_open"]
        assert after["portcullis_stream_live"] == before["portcullis_stream_live"]
        tasks = "portcullis_control_plane_asyncio_tasks"
        await gauge_reaches(plane.url, tasks, before[tasks])
        assert await pubsub_counts(client) == subscriptions
    finally:
        await bus.close()
        await bus.engine.dispose()
        await client.aclose()

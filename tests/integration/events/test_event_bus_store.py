"""The event bus on a real store and a real Redis: events persisted before fan-out,
replay from the table, Redis pub/sub between two bus instances, Redis outages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.events.bus import (
    InProcessBus,
    RedisBus,
    create_event_bus,
    read_events,
    record_event,
)
from portcullis.events.catalogue import EventType
from portcullis.settings import Settings
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head
from support.events import sample
from support.redis import RedisServer, free_port


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def other_node(engine: AsyncEngine, database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of its own on the same store, as a second control-plane node has."""
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


async def test_an_event_a_write_records_is_published_when_it_commits(
    engine: AsyncEngine,
) -> None:
    bus = InProcessBus(engine)
    subscription = bus.subscribe()
    async with write_transaction(engine) as conn:
        event = await record_event(conn, EventType.ALERT_FIRING, "errors", sample("alert.firing"))
        assert subscription.pending() == 0  # not before the commit
    assert await asyncio.wait_for(subscription.get(), 5) == event
    # A writer that also delivers it (as the jobs do) does not make subscribers hear it twice.
    await bus.deliver([event])
    assert subscription.pending() == 0

    async def write_then_fail() -> None:
        async with write_transaction(engine) as conn:
            await record_event(conn, EventType.ALERT_FIRING, "gone", sample("alert.firing"))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError, match="rolled back"):
        await write_then_fail()
    later = await bus.publish(EventType.ALERT_RESOLVED, "errors", sample("alert.resolved"))
    # The rolled-back event never reached anyone: the next one heard is the later event.
    assert await asyncio.wait_for(subscription.get(), 5) == later
    await bus.close()
    # A closed bus no longer listens to the engine's commits.
    async with write_transaction(engine) as conn:
        await record_event(conn, EventType.ALERT_FIRING, "after", sample("alert.firing"))
    assert subscription.pending() == 0


async def test_a_write_on_one_node_reaches_the_other_nodes_subscribers_over_redis(
    engine: AsyncEngine, other_node: AsyncEngine, redis_server: RedisServer
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    writer = RedisBus(engine, redis_server.url, prefix=prefix)
    reader = RedisBus(other_node, redis_server.url, prefix=prefix)
    try:
        await writer.start()
        await reader.start()
        remote = reader.subscribe()
        # A plain write transaction, as a REST or GraphQL change makes: no explicit publish.
        async with write_transaction(engine) as conn:
            event = await record_event(conn, EventType.ALERT_FIRING, "x", sample("alert.firing"))
        assert await asyncio.wait_for(remote.get(), 5) == event
    finally:
        await writer.close()
        await reader.close()


async def test_publish_stores_then_fans_out(engine: AsyncEngine) -> None:
    bus = InProcessBus(engine)
    subscription = bus.subscribe([EventType.ANOMALY_DETECTED])
    first = await bus.publish(EventType.ALERT_FIRING, "errors", sample("alert.firing"))
    second = await bus.publish("anomaly.detected", "key:k1", sample("anomaly.detected"))
    assert second.id > first.id
    assert await asyncio.wait_for(subscription.get(), 1) == second
    assert subscription.pending() == 0
    assert await read_events(engine) == [first, second]
    assert await read_events(engine, after=first.id) == [second]
    assert await read_events(engine, kinds=["alert.firing"]) == [first]
    assert await read_events(engine, subject="key:k1") == [second]
    assert await read_events(engine, limit=1) == [first]
    with pytest.raises(ValueError, match="unknown event kind"):
        await bus.publish("alert.exploded", "x")
    incomplete = {k: v for k, v in sample("alert.firing").items() if k != "threshold"}
    with pytest.raises(ValueError, match=r"alert\.firing event data: threshold: Field required"):
        await bus.publish("alert.firing", "x", incomplete)
    assert len(await read_events(engine)) == 2
    await bus.close()


async def test_events_recorded_in_a_rolled_back_transaction_never_existed(
    engine: AsyncEngine,
) -> None:
    async def write_then_fail() -> None:
        async with write_transaction(engine) as conn:
            await record_event(conn, EventType.ALERT_FIRING, "errors", sample("alert.firing"))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError, match="rolled back"):
        await write_then_fail()
    assert await read_events(engine) == []


def test_the_factory_picks_redis_only_when_configured() -> None:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    assert isinstance(create_event_bus(engine, Settings(redis_url=None)), InProcessBus)
    assert isinstance(
        create_event_bus(engine, Settings(redis_url="redis://127.0.0.1:1/0")), RedisBus
    )


async def test_redis_carries_events_between_bus_instances(
    engine: AsyncEngine, other_node: AsyncEngine, redis_server: RedisServer
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    sender = RedisBus(engine, redis_server.url, prefix=prefix)
    receiver = RedisBus(other_node, redis_server.url, prefix=prefix)
    try:
        await sender.start()
        await receiver.start()
        local = sender.subscribe()
        remote = receiver.subscribe([EventType.ALERT_FIRING])
        resolved = await sender.publish(
            EventType.ALERT_RESOLVED, "errors", sample("alert.resolved", reason="x")
        )
        fired = await sender.publish(
            EventType.ALERT_FIRING, "errors", sample("alert.firing", value=0.25)
        )
        assert await asyncio.wait_for(remote.get(), 5) == fired
        # The publisher's own subscribers got both directly, and not again from Redis.
        assert [await local.get(), await local.get()] == [resolved, fired]
        # A later event from the receiver reaches the publisher over Redis after any echo
        # of its own two would have (Redis pushes to a subscriber in publish order): the
        # next event its subscribers see must be that one.
        sentinel = await receiver.publish(
            EventType.ALERT_RESOLVED, "sentinel", sample("alert.resolved", reason="y")
        )
        assert await asyncio.wait_for(local.get(), 5) == sentinel
        assert local.pending() == 0
        assert remote.pending() == 0
        assert (receiver.received, sender.received) == (2, 1)
        assert sender.publish_failures == 0
    finally:
        await sender.close()
        await receiver.close()


async def test_a_redis_outage_loses_no_stored_event_and_the_listener_recovers(
    engine: AsyncEngine, other_node: AsyncEngine
) -> None:
    from support.redis import running_redis

    prefix = f"test:{uuid.uuid4().hex}:"
    with running_redis() as server:
        sender = RedisBus(engine, server.url, prefix=prefix)
        receiver = RedisBus(other_node, server.url, prefix=prefix)
        try:
            await sender.start()
            await receiver.start()
            remote = receiver.subscribe()
            local = sender.subscribe()
            server.stop()
            during = await sender.publish(EventType.ALERT_FIRING, "errors", sample("alert.firing"))
            assert sender.publish_failures == 1
            assert await local.get() == during  # local delivery never needs Redis
            server.start()
            after = None
            for _ in range(100):  # the listener reconnects with backoff (<= 5 s)
                after = await sender.publish(
                    EventType.ALERT_RESOLVED, "errors", sample("alert.resolved")
                )
                try:
                    received = await asyncio.wait_for(remote.get(), 0.2)
                except TimeoutError:
                    continue
                assert received == after
                break
            else:
                pytest.fail("the Redis listener did not come back")
            assert (await read_events(engine))[0] == during
        finally:
            await sender.close()
            await receiver.close()


async def test_start_returns_when_redis_is_unreachable(engine: AsyncEngine) -> None:
    bus = RedisBus(engine, f"redis://127.0.0.1:{free_port()}/0")
    try:
        await asyncio.wait_for(bus.start(), 10)
        event = await bus.publish(EventType.ALERT_FIRING, "errors", sample("alert.firing"))
        assert bus.publish_failures == 1
        assert await read_events(engine) == [event]
    finally:
        await bus.close()

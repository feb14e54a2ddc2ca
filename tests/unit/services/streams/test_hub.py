"""The stream hub on an in-memory log: resume, live hand-over, slow clients, resets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from portcullis.events.bus import Event
from portcullis.services.streams.filters import EventFilter
from portcullis.services.streams.hub import EventStream, Reset, StreamHub, StreamsFull
from portcullis.services.streams.log import MemoryEventLog

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def event(i: int, kind: str = "key.created", org: str | None = "org-a", **data: str) -> Event:
    body = {"key_id": f"k{i}", "consumer": "alice", "environment": "live", "status": "active"}
    return Event(i, NOW, kind, f"key:k{i}", {**body, **data}, org)


@pytest.fixture
async def log() -> MemoryEventLog:
    return MemoryEventLog()


@pytest.fixture
async def hub(log: MemoryEventLog) -> AsyncIterator[StreamHub]:
    # A poll interval far beyond the test: rounds run only when the test asks (`tailed`).
    hub = StreamHub(log, poll_interval=60, queue_size=8, page=16, max_clients=3)
    await hub.start()
    yield hub
    await hub.stop()


async def take(stream: EventStream, n: int) -> list[int]:
    ids = []
    for _ in range(n):
        item = await asyncio.wait_for(anext(stream), 5)
        assert isinstance(item, Event)
        ids.append(item.id)
    return ids


async def test_live_stream_gets_new_events_in_order(hub: StreamHub, log: MemoryEventLog) -> None:
    stream = await hub.open(EventFilter())
    for i in range(1, 6):
        log.append(event(i))
    await hub.tailed()
    assert await take(stream, 5) == [1, 2, 3, 4, 5]
    assert stream.position == 5


async def test_resume_reads_the_log_then_hands_over_to_live_without_gap_or_repeat(
    hub: StreamHub, log: MemoryEventLog
) -> None:
    for i in range(1, 201):
        log.append(event(i))
    await hub.tailed()
    stream = await hub.open(EventFilter(), after=37)
    got = await take(stream, 20)
    # Events arrive while the stream is still catching up from the log.
    for i in range(201, 301):
        log.append(event(i))
    await hub.tailed()
    got += await take(stream, 263 - 20)
    assert got == list(range(38, 301))
    assert stream.live


async def test_slow_client_falls_behind_catches_up_from_the_log_and_loses_nothing(
    hub: StreamHub, log: MemoryEventLog
) -> None:
    stream = await hub.open(EventFilter())
    for i in range(1, 101):
        log.append(event(i))
    await hub.tailed()
    # The live queue never holds more than queue_size events for one client.
    assert len(stream._items) <= hub.queue_size
    assert stream.lagged == 1
    assert not stream.live
    assert await take(stream, 100) == list(range(1, 101))
    assert stream.live


async def test_resume_from_before_the_retention_horizon_starts_with_a_reset(
    log: MemoryEventLog,
) -> None:
    for i in range(1, 61):
        log.append(event(i))
    log.forget_upto(50)
    # A hub started after retention ran: the deleted events are in no memory either.
    hub = StreamHub(log, poll_interval=60, page=16)
    stream = await hub.open(EventFilter(), after=10)
    first = await anext(stream)
    assert first == Reset(10, 50, "retention")
    assert await take(stream, 10) == list(range(51, 61))
    await hub.stop()


async def test_resumes_near_the_head_are_served_from_memory(
    hub: StreamHub, log: MemoryEventLog
) -> None:
    reads: list[int] = []
    read = log.read

    async def counted(**kwargs: object) -> list[Event]:
        reads.append(1)
        return await read(**kwargs)  # type: ignore[arg-type]

    for i in range(1, 101):
        log.append(event(i))
    await hub.tailed()
    log.read = counted  # type: ignore[method-assign]
    # A reconnect storm: many clients resume from recent positions, none hits the log.
    streams = [await hub.open(EventFilter(), after=after) for after in (3, 40, 99)]
    assert [await take(s, 100 - a) for s, a in zip(streams, (3, 40, 99), strict=True)] == [
        list(range(a + 1, 101)) for a in (3, 40, 99)
    ]
    assert reads == []
    assert all(s.live for s in streams)


async def test_resume_from_beyond_the_newest_event_starts_with_a_reset(
    hub: StreamHub, log: MemoryEventLog
) -> None:
    log.append(event(1))
    stream = await hub.open(EventFilter(), after=999)
    assert await anext(stream) == Reset(999, 1, "unknown_position")
    log.append(event(2))
    await hub.tailed()
    assert await take(stream, 1) == [2]


async def test_filters_scope_kinds_and_rooms(hub: StreamHub, log: MemoryEventLog) -> None:
    scoped = await hub.open(EventFilter(organization_id="org-b"))
    revoked = await hub.open(EventFilter.of(types=["key.revoked"]))
    room = await hub.open(EventFilter.of(rooms=["consumer:bob"]))
    log.append(event(1))
    log.append(event(2, "key.revoked"))
    log.append(event(3, org="org-b", consumer="bob"))
    log.append(event(4, org=None))
    await hub.tailed()
    assert await take(scoped, 1) == [3]
    assert await take(revoked, 1) == [2]
    assert await take(room, 1) == [3]
    for stream in (scoped, revoked, room):
        assert not stream._items


async def test_closed_streams_leave_nothing_behind_and_the_cap_holds(hub: StreamHub) -> None:
    streams = [await hub.open(EventFilter()) for _ in range(3)]
    with pytest.raises(StreamsFull):
        await hub.open(EventFilter())
    for stream in streams:
        stream.close()
    assert hub.streams == 0
    assert hub.live_streams == 0
    assert await anext(streams[0], None) is None


def test_unknown_rooms_and_kinds_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'nowhere' is not a room"):
        EventFilter.of(rooms=["nowhere"])
    with pytest.raises(ValueError, match=r"'key\.nope' is not an event kind"):
        EventFilter.of(types=["key.nope"])
    assert EventFilter.of(types=["key.*"]).kinds == frozenset(
        k for k in EventFilter.of(types=["*"]).kinds or () if k.startswith("key.")
    )


async def test_a_transport_can_take_what_is_queued_in_one_go(
    hub: StreamHub, log: MemoryEventLog
) -> None:
    stream = await hub.open(EventFilter())
    for i in range(1, 7):
        log.append(event(i))
    await hub.tailed()
    assert await take(stream, 1) == [1]
    assert [e.id for e in stream.take_ready(3) if isinstance(e, Event)] == [2, 3, 4]
    assert stream.position == 4
    assert [e.id for e in stream.take_ready(10) if isinstance(e, Event)] == [5, 6]
    assert stream.take_ready(10) == []

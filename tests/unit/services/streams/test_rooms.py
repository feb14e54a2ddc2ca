"""The WebSocket rooms protocol on a fake transport: the bounded send queue (lagged and
resumed, or closed as a slow consumer), the `traffic` room on a fake live traffic feed
(resume from its ring, no repeat, the caller's view), idle timeout, lost permission,
and every hub stream released however the session ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.events.bus import Event
from portcullis.services.audit import AuditLog
from portcullis.services.context import Operation, RequestFacts
from portcullis.services.rbac import ALL_PERMISSIONS, Caller, Permission, Role
from portcullis.services.scoping import OrgScope
from portcullis.services.streams.access import StreamService
from portcullis.services.streams.hub import StreamHub
from portcullis.services.streams.log import MemoryEventLog
from portcullis.services.streams.rooms import (
    CLOSE_FORBIDDEN,
    CLOSE_IDLE,
    CLOSE_SLOW_CONSUMER,
    Access,
    Lapsed,
    Limits,
    RoomSession,
)

NOW = datetime(2026, 12, 7, tzinfo=UTC)
OWNER = Caller("user:a@example.com", Role.OWNER, ALL_PERMISSIONS, user_id="u1")


def event(i: int) -> Event:
    data = {"key_id": f"k{i}", "consumer": "alice", "environment": "live", "status": "active"}
    return Event(i, NOW, "key.created", f"key:k{i}", data, "org-a")


class FakeTransport:
    """Frames in through `inbox`; sends wait while `gate` is closed (a client that does
    not read); `close` records the code."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.arrived = asyncio.Event()
        self.closed: tuple[int, str] | None = None

    async def receive(self) -> str | bytes | None:
        return await self.inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] != "welcome":
            await self.gate.wait()
        self.sent.append(message)
        self.arrived.set()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def put(self, **message: Any) -> None:
        self.inbox.put_nowait(json.dumps(message))

    async def wait_for(self, count: int, kind: str) -> list[dict[str, Any]]:
        async with asyncio.timeout(5):
            while len(got := [m for m in self.sent if m["type"] == kind]) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return got


def access(caller: Caller = OWNER, *, organization_id: str | None = None) -> Access:
    scope = OrgScope("acme", organization_id) if organization_id else OrgScope()
    op = Operation.for_caller(caller, RequestFacts("r1", None), cast(AuditLog, None), scope)

    async def recheck() -> Caller | Lapsed:
        return caller

    return Access(caller, op, recheck)


@pytest.fixture
async def log() -> MemoryEventLog:
    return MemoryEventLog()


@pytest.fixture
async def hub(log: MemoryEventLog) -> AsyncIterator[StreamHub]:
    hub = StreamHub(log, poll_interval=60, queue_size=8, page=16)
    await hub.start()
    yield hub
    await hub.stop()


def session(
    hub: StreamHub, transport: FakeTransport, limits: Limits, given: Access | None = None, **kw: Any
) -> RoomSession:
    found = given or access()

    async def authenticate(token: str) -> Access | None:
        return found if token == "good" else None

    streams = StreamService(cast(AsyncEngine, None), hub)
    return RoomSession(transport, authenticate, streams, limits=limits, **kw)


async def test_a_slow_reader_is_told_it_lagged_and_resumes_with_nothing_lost(
    hub: StreamHub, log: MemoryEventLog
) -> None:
    transport = FakeTransport()
    s = session(hub, transport, Limits(send_queue=4, send_timeout=10, heartbeat=60))
    running = asyncio.create_task(s.run("good"))
    transport.put(type="subscribe", room="consumer:alice")
    await transport.wait_for(1, "subscribed")
    transport.gate.clear()  # the client stops reading
    for i in range(1, 101):
        log.append(event(i))
    await hub.tailed()
    async with asyncio.timeout(5):
        while s.queue.qsize() < 4:
            await asyncio.sleep(0.01)
    lagging = s.rooms["consumer:alice"].stream
    assert lagging is not None
    assert not lagging.live  # the hub detached it: it reads the log when the client is back
    transport.gate.set()
    events = await transport.wait_for(100, "event")
    transport.inbox.put_nowait(None)
    assert await running == 0
    assert [m["position"] for m in events] == list(range(1, 101))
    assert any(m["type"] == "lagged" for m in transport.sent)
    assert s.queued_max == 4  # never more than the send queue
    assert hub.streams == 0


async def test_a_reader_that_stays_stuck_is_closed_as_a_slow_consumer(
    hub: StreamHub, log: MemoryEventLog
) -> None:
    transport = FakeTransport()
    s = session(hub, transport, Limits(send_queue=4, send_timeout=0.2, heartbeat=60))
    running = asyncio.create_task(s.run("good"))
    transport.put(type="subscribe", room="consumer:alice")
    await transport.wait_for(1, "subscribed")
    transport.gate.clear()
    for i in range(1, 51):
        log.append(event(i))
    await hub.tailed()
    assert await asyncio.wait_for(running, 5) == CLOSE_SLOW_CONSUMER
    assert transport.closed is not None
    assert transport.closed[0] == CLOSE_SLOW_CONSUMER
    assert s.queued_max == 4
    assert hub.streams == 0


async def test_an_idle_connection_is_closed_and_its_streams_released(hub: StreamHub) -> None:
    transport = FakeTransport()
    s = session(hub, transport, Limits(idle_timeout=0.2, heartbeat=60))
    running = asyncio.create_task(s.run("good"))
    transport.put(type="subscribe", room="alerts")
    transport.put(type="subscribe", room="config", after=0)
    await transport.wait_for(2, "subscribed")
    assert hub.streams == 2
    assert await asyncio.wait_for(running, 5) == CLOSE_IDLE
    assert hub.streams == 0


async def test_losing_a_rooms_permission_closes_with_4403(hub: StreamHub) -> None:
    transport = FakeTransport()
    without = Caller("user:a@example.com", Role.VIEWER, frozenset({Permission.CONFIG_READ}))
    callers = [OWNER]

    async def recheck() -> Caller | Lapsed:
        return callers[-1]

    given = Access(OWNER, access().op, recheck)
    s = session(hub, transport, Limits(heartbeat=0.05), given)
    running = asyncio.create_task(s.run("good"))
    transport.put(type="subscribe", room="alerts")
    await transport.wait_for(1, "subscribed")
    callers.append(without)
    assert await asyncio.wait_for(running, 5) == CLOSE_FORBIDDEN
    assert transport.sent[-1] == {
        "type": "closed",
        "reason": "the caller no longer holds 'alerts:read'",
    }
    assert hub.streams == 0


@dataclass(frozen=True)
class Frame:
    second: int
    viewer: str | None = "everyone"

    def visible_to(self, organization_id: str | None) -> Frame:
        return Frame(self.second, organization_id)

    def as_json(self) -> dict[str, Any]:
        return {"second": self.second, "viewer": self.viewer}


@dataclass
class Listener:
    frames: asyncio.Queue[Frame | None] = field(default_factory=asyncio.Queue)
    closed: bool = False

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> Frame:
        frame = await self.frames.get()
        if frame is None:
            raise StopAsyncIteration
        return frame

    def close(self) -> None:
        self.closed = True
        self.frames.put_nowait(None)


@dataclass
class FakeTraffic:
    history: list[Frame]
    listeners: list[Listener] = field(default_factory=list)

    def listen(self, maxsize: int) -> Listener:
        listener = Listener()
        self.listeners.append(listener)
        return listener

    def since(self, second: int) -> list[Frame]:
        return [f for f in self.history if f.second > second]


async def test_the_traffic_room_resumes_from_the_ring_without_repeats_in_the_callers_view(
    hub: StreamHub,
) -> None:
    traffic = FakeTraffic([Frame(s) for s in range(100, 106)])
    transport = FakeTransport()
    limited = access(organization_id="org-a")
    s = session(hub, transport, Limits(heartbeat=60), limited, traffic=traffic)
    running = asyncio.create_task(s.run("good"))
    transport.put(type="subscribe", room="traffic", after=103)
    (ack,) = await transport.wait_for(1, "subscribed")
    (listener,) = traffic.listeners
    for second in (105, 106, 107):  # 105 came from the ring already
        listener.frames.put_nowait(Frame(second))
    frames = await transport.wait_for(4, "traffic")
    transport.put(type="unsubscribe", room="traffic")
    await transport.wait_for(1, "unsubscribed")
    transport.inbox.put_nowait(None)
    await running
    assert ack["position"] == 103
    assert [f["position"] for f in frames] == [104, 105, 106, 107]
    assert {f["traffic"]["viewer"] for f in frames} == {"org-a"}
    assert {f["room"] for f in frames} == {"traffic"}
    assert listener.closed


async def test_the_traffic_room_without_a_feed_is_a_clear_error(hub: StreamHub) -> None:
    transport = FakeTransport()
    s = session(hub, transport, Limits(heartbeat=60), traffic=None)
    running = asyncio.create_task(s.run("good"))
    transport.put(type="subscribe", room="traffic", id=3)
    (refused,) = await transport.wait_for(1, "error")
    transport.inbox.put_nowait(None)
    await running
    assert (refused["status"], refused["code"], refused["id"]) == (503, "traffic-unavailable", 3)

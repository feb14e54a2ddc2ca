"""The in-process fan-out: kinds filters, bounded queues, closing, the JSON form."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from portcullis.events.bus import Event, InProcessBus, Subscription, SubscriptionClosed
from portcullis.events.catalogue import CATALOGUE, EventType, event_type
from portcullis.store.engine import create_engine

T0 = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def event(n: int, kind: EventType = EventType.ALERT_FIRING, **data: Any) -> Event:
    return Event(n, T0, kind.value, f"subject-{n}", data)


def bus() -> InProcessBus:
    # An engine that is never connected: fan-out alone needs no store.
    return InProcessBus(create_engine("sqlite+aiosqlite:///:memory:"))


async def test_every_subscriber_gets_the_kinds_it_asked_for() -> None:
    b = bus()
    everything = b.subscribe()
    alerts = b.subscribe([EventType.ALERT_FIRING, EventType.ALERT_RESOLVED])
    anomalies = b.subscribe(["anomaly.detected"])
    await b.deliver(
        [
            event(1, EventType.ALERT_FIRING),
            event(2, EventType.ANOMALY_DETECTED),
            event(3, EventType.ALERT_RESOLVED),
        ]
    )
    assert [e.id for e in [await everything.get() for _ in range(3)]] == [1, 2, 3]
    assert [(await alerts.get()).id, (await alerts.get()).id] == [1, 3]
    assert (await anomalies.get()).id == 2
    assert everything.pending() == alerts.pending() == anomalies.pending() == 0


async def test_a_waiting_subscriber_wakes_up_on_delivery() -> None:
    b = bus()
    subscription = b.subscribe()
    waiter = asyncio.create_task(subscription.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    await b.deliver([event(7)])
    assert (await asyncio.wait_for(waiter, 1)).id == 7


async def test_a_slow_subscriber_loses_the_newest_events_and_counts_them() -> None:
    b = bus()
    slow = b.subscribe(maxsize=2)
    fast = b.subscribe(maxsize=10)
    await b.deliver([event(n) for n in range(1, 6)])
    assert slow.dropped == 3
    assert [(await slow.get()).id, (await slow.get()).id] == [1, 2]
    assert fast.dropped == 0
    assert fast.pending() == 5


async def test_closing_ends_iteration_after_the_queued_events() -> None:
    b = bus()
    subscription = b.subscribe()
    await b.deliver([event(1), event(2)])
    subscription.close()
    await b.deliver([event(3)])  # detached: not queued
    assert [e.id async for e in subscription] == [1, 2]
    with pytest.raises(SubscriptionClosed):
        await subscription.get()


async def test_closing_the_bus_wakes_every_waiting_subscriber() -> None:
    b = bus()
    subscription = b.subscribe()
    waiter = asyncio.create_task(subscription.get())
    await asyncio.sleep(0)
    await b.close()
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(waiter, 1)


def test_unknown_kinds_are_refused_with_the_known_ones_named() -> None:
    with pytest.raises(ValueError, match=r"unknown event kind 'alert\.exploded'.*alert\.firing"):
        event_type("alert.exploded")
    with pytest.raises(ValueError, match="unknown event kind"):
        Subscription(["nope"], 10, lambda _: None)
    with pytest.raises(ValueError, match="maxsize"):
        Subscription(None, 0, lambda _: None)


def test_every_kind_is_catalogued() -> None:
    assert set(CATALOGUE) == set(EventType)
    for kind, spec in CATALOGUE.items():
        assert spec.kind is kind
        assert spec.data


def test_events_round_trip_through_json() -> None:
    original = event(42, EventType.KEY_AUTO_SUSPENDED, credential_id="abc", score=9.5)
    text = original.as_json()
    assert text["occurred_at"] == "2030-01-02T03:04:05.678901Z"
    assert Event.from_json(text) == original
    with pytest.raises(TypeError):
        Event.from_json({**text, "data": [1]})

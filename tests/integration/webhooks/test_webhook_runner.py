"""The delivery worker as the control plane runs it: started, woken by the event bus,
stopped."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from portcullis.events.bus import InProcessBus, record_event
from portcullis.events.catalogue import EventType
from portcullis.identity.secrets import ServerSecret
from portcullis.settings import Settings
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head
from portcullis.webhooks.endpoints import NewEndpoint, create_endpoint
from portcullis.webhooks.runner import WebhookDelivery
from support.events import sample
from support.threaded_upstream import eventually
from support.webhook_receiver import webhook_receiver

SERVER = ServerSecret.from_secret(b"webhook-runner-test-secret-0123456789ab")


async def test_a_published_event_wakes_the_worker_long_before_its_poll(database_url: str) -> None:
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    # The poll is a minute away: only the bus can bring the delivery in time.
    settings = Settings(webhook_allowed_networks=["127.0.0.0/8"], webhook_poll_interval=60)
    bus = InProcessBus(engine)
    delivery = WebhookDelivery(engine, settings, SERVER, bus)
    try:
        async with webhook_receiver() as receiver:
            async with write_transaction(engine) as conn:
                _, receiver.secret = await create_endpoint(
                    conn, SERVER, NewEndpoint(receiver.url, ["alert.*"]), datetime.now(UTC)
                )
            delivery.start()
            event = await bus.publish(EventType.ALERT_FIRING, "errors", sample("alert.firing"))
            await asyncio.wait_for(receiver.arrived.wait(), 20)
        [received] = receiver.deliveries
        assert received.verified is True
        assert json.loads(received.body)["event_id"] == event.id
    finally:
        await delivery.stop()
        await bus.close()
        await engine.dispose()


def test_a_bad_allowed_network_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValidationError, match="webhook_allowed_networks") as caught:
        Settings(webhook_allowed_networks=["10.0.0.0/33"])
    assert "'10.0.0.0/33' is not a network" in str(caught.value)


async def test_a_rate_limited_endpoint_receives_at_its_rate_while_others_get_everything(
    database_url: str,
) -> None:
    """Real time, real receivers counting arrivals: 30 events to an endpoint limited to
    10 deliveries a second (a second's worth at once, then 10 a second: at least 2 s for
    the rest) and to an unlimited one (done at once)."""
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    settings = Settings(webhook_allowed_networks=["127.0.0.0/8"], webhook_poll_interval=0.05)
    delivery = WebhookDelivery(engine, settings, SERVER)
    events, rate = 30, 10
    try:
        async with webhook_receiver() as limited, webhook_receiver() as free:
            now = datetime.now(UTC)
            async with write_transaction(engine) as conn:
                _, limited.secret = await create_endpoint(
                    conn, SERVER, NewEndpoint(limited.url, ["alert.*"], rate_limit=rate), now
                )
                _, free.secret = await create_endpoint(
                    conn, SERVER, NewEndpoint(free.url, ["alert.*"], max_concurrency=32), now
                )
                for _ in range(events):
                    await record_event(
                        conn, EventType.ALERT_FIRING, "errors", sample("alert.firing"), now=now
                    )
            delivery.start()
            await eventually(lambda: len(limited.deliveries) == events, timeout=30)
            assert len(free.deliveries) == events
    finally:
        await delivery.stop()
        await engine.dispose()
    assert all(d.verified for d in limited.deliveries + free.deliveries)
    arrivals = [d.received_at for d in limited.deliveries]
    # (events - burst) / rate seconds at least, whatever the machine's speed.
    assert arrivals[-1] - arrivals[0] >= (events - rate) / rate * 0.95
    # In any second: at most the burst and a second's refill.
    for start in arrivals:
        assert sum(start <= t < start + 1 for t in arrivals) <= 2 * rate
    # The unlimited endpoint was not held back by the limited one's pacing.
    assert free.deliveries[-1].received_at < arrivals[-1] - 1

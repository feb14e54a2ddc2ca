"""The delivery worker as the control plane runs it: started, woken by the event bus,
stopped."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from portcullis.events.bus import InProcessBus
from portcullis.events.catalogue import EventType
from portcullis.identity.secrets import ServerSecret
from portcullis.settings import Settings
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head
from portcullis.webhooks.endpoints import NewEndpoint, create_endpoint
from portcullis.webhooks.runner import WebhookDelivery
from support.events import sample
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
